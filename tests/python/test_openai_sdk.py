"""The official `openai` SDK against a running sidecar.

Started by tests/tests/sdk.rs, which runs the fakes and the sidecar and passes the sidecar's
URL in SPILLWAY_BASE_URL. Features it configures:
  chat      -> primary (healthy, OpenAI-compatible)
  claude    -> the same fake as an Anthropic endpoint (the sidecar translates)
  flaky     -> broken (always 503), an Anthropic endpoint answering 529, then backup
  midstream -> an upstream that sends its own error event after two chunks
  truncated -> an Anthropic upstream that drops the connection after two chunks
"""

import json
import os
import urllib.request

import openai
import pytest

BASE_URL = os.environ["SPILLWAY_BASE_URL"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
HELLO = [{"role": "user", "content": "Say hello"}]
# One feature per provider kind; every one answers "Hello from primary." through the sidecar.
PROVIDERS = ["chat", "claude", "azure", "bedrock", "bedrock-invoke", "gemini", "vertex-claude"]
BUSY = ["bedrock-busy", "gemini-busy", "claude-busy"]


@pytest.fixture()
def client():
    # No SDK retries: every failure must be the sidecar's answer, not hidden by the client.
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused-by-the-sidecar", max_retries=0)


@pytest.mark.parametrize("feature", PROVIDERS)
def test_non_streaming(client, feature):
    raw = client.chat.completions.with_raw_response.create(model=feature, messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Hello from primary.")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-spillway-endpoint"] == ("primary" if feature == "chat" else feature)
    assert raw.headers["x-spillway-request-id"].startswith("req_")


def test_multi_part_content_and_unknown_fields(client):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    ]
    completion = client.chat.completions.create(
        model="chat", messages=messages, temperature=0.2, extra_body={"a_parameter_from_the_future": True})
    assert completion.choices[0].message.content


@pytest.mark.parametrize("feature", PROVIDERS)
def test_streaming_with_usage(client, feature):
    stream = client.chat.completions.create(
        model=feature, messages=HELLO, stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.startswith("Hello from primary.")
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("feature", PROVIDERS)
def test_tool_call(client, feature):
    completion = client.chat.completions.create(
        model=feature, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


@pytest.mark.parametrize("feature", PROVIDERS)
def test_streamed_tool_call(client, feature):
    stream = client.chat.completions.create(
        model=feature, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True)
    name, arguments, finish = None, "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert finish == "tool_calls"
    assert set(json.loads(arguments)) == {"city", "days"}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_endpoint_through_the_openai_sdk(client, stream):
    if stream:
        chunks = list(client.chat.completions.create(
            model="claude", messages=HELLO, stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello from primary.")
        assert chunks[-1].usage.completion_tokens > 0
    else:
        completion = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER_TOOL])
        call = completion.choices[0].message.tool_calls[0]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert set(json.loads(call.function.arguments)) == {"city", "days"}


def test_fallback_from_a_failing_primary(client):
    raw = client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
    assert raw.parse().choices[0].message.content.startswith("Hello from backup.")
    assert raw.headers["x-spillway-endpoint"] == "backup"
    assert raw.headers["x-spillway-attempts"] == "3"

    stream = client.chat.completions.create(model="flaky", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Hello from backup.")


def test_feature_in_header(client):
    completion = client.chat.completions.create(
        model="anything", messages=HELLO, extra_headers={"x-spillway-feature": "flaky"})
    assert completion.choices[0].message.content.startswith("Hello from backup.")


def test_unknown_feature(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "unknown_feature"
    for feature in PROVIDERS + ["flaky", "midstream", "truncated"]:
        assert feature in info.value.message


@pytest.mark.parametrize("feature", BUSY)
def test_a_throttled_provider_is_a_rate_limit_error(client, feature):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=feature, messages=HELLO)
    assert info.value.code == "all_endpoints_throttled"
    assert info.value.response.headers["retry-after"] == "3"


def test_malformed_requests(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chat", messages=[])
    assert info.value.code == "empty_messages"
    assert info.value.param == "messages"

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chat", messages=[{"role": "wizard", "content": "x"}])
    assert "messages[0].role" in info.value.message

    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", cast_to=object, content=b"{not json",
                    options={"headers": {"Content-Type": "application/json"}})
    assert info.value.code == "invalid_json"


@pytest.mark.parametrize("feature", ["midstream", "truncated"])
def test_mid_stream_failure_raises_instead_of_ending_quietly(client, feature):
    stream = client.chat.completions.create(model=feature, messages=HELLO, stream=True)
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            for choice in chunk.choices:
                received += choice.delta.content or ""
    assert received.startswith("Hello from"), "the chunks before the failure arrived"
    assert info.value.message


def requests_seen(feature):
    """Requests the sidecar received for `feature`, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{BASE_URL}/metrics") as reply:
        text = reply.read().decode()
    prefix = f'spillway_requests_total{{feature="{feature}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_an_exhausted_hierarchy_is_not_retried_by_the_sdk():
    # The SDK's defaults (two retries with backoff), not the suite's retry-free client: when
    # every endpoint has failed, the sidecar's `x-should-retry: false` stops the SDK from
    # tripling the load on a provider that is already down.
    default = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused-by-the-sidecar")
    assert default.max_retries == 2
    with pytest.raises(openai.InternalServerError) as info:
        default.chat.completions.create(model="down-openai", messages=HELLO)
    assert info.value.status_code == 503
    assert info.value.response.headers["x-should-retry"] == "false"
    assert requests_seen("down-openai") == 1


def test_streamed_tool_loop_with_reasoning_on_gemini(client):
    """Gemini 3 with thinking refuses a replayed function call without its thought signature;
    the OpenAI SDK keeps the tool-call id that carries it, so the loop's second turn succeeds."""
    first_turn = [{"role": "user", "content": "Weather in Paris?"}]
    stream = client.chat.completions.create(
        model="gemini", reasoning_effort="low", tools=[WEATHER_TOOL], tool_choice="required",
        stream=True, stream_options={"include_usage": True}, messages=first_turn)
    calls, usage = {}, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = delta.id or entry["id"]
            if delta.function:
                entry["name"] = delta.function.name or entry["name"]
                entry["arguments"] += delta.function.arguments or ""
    call = calls[0]
    assert call["name"] == "get_weather"
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.completion_tokens > usage.completion_tokens_details.reasoning_tokens
    def second_turn(call_id):
        return client.chat.completions.create(
            model="gemini", reasoning_effort="low", tools=[WEATHER_TOOL], tool_choice="none",
            messages=first_turn + [
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "18C, rain"},
            ])

    assert second_turn(call["id"]).choices[0].message.content.startswith("Hello from primary.")
    # The provider does check: the same turn with an id that lost the signature is refused.
    with pytest.raises(openai.BadRequestError):
        second_turn("call_without_its_signature")


def test_implicitly_cached_tokens_from_gemini_in_openai_usage(client):
    """Gemini caches long prompts by itself: its cached count is part of OpenAI's prompt_tokens
    and named in its details, and the totals add up."""
    completion = client.chat.completions.create(
        model="gemini", messages=[{"role": "system", "content": "A long manual. " * 200}, *HELLO])
    usage = completion.usage
    assert usage.prompt_tokens_details.cached_tokens > 0
    assert usage.prompt_tokens > usage.prompt_tokens_details.cached_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


EMBEDDERS = ["embed-openai", "embed-azure", "embed-titan", "embed-cohere", "embed-vertex"]
TEXTS = ["a short text", "another, somewhat longer text to embed"]


@pytest.mark.parametrize("feature", EMBEDDERS)
@pytest.mark.parametrize("encoding", ["default", "float"])
def test_embeddings(client, feature, encoding):
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    extra = {} if encoding == "default" else {"encoding_format": "float"}
    raw = client.embeddings.with_raw_response.create(model=feature, input=TEXTS, **extra)
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    # The fakes put each text's length first: the vectors came back in the inputs' order.
    assert [d.embedding[0] for d in result.data] == [len(t) for t in TEXTS]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert raw.headers["x-spillway-endpoint"] == feature
    if feature != "embed-cohere":
        assert result.usage.prompt_tokens == sum(len(t.split()) for t in TEXTS)


@pytest.mark.parametrize("feature", ["embed-openai", "embed-titan", "embed-vertex"])
def test_embeddings_with_fewer_dimensions(client, feature):
    result = client.embeddings.create(model=feature, input="one text", dimensions=4, encoding_format="float")
    assert len(result.data[0].embedding) == 4


def test_embeddings_fall_back_and_refuse_what_no_endpoint_can_do(client):
    assert client.embeddings.create(model="embed-fallback", input="x").data[0].embedding[0] == 1
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="embed-cohere", input="x", dimensions=4)
    assert err.value.body["code"] == "unsupported_by_every_endpoint"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="embed-titan", input=[[1, 2, 3]])
    assert "token ids" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="embed-titan", input=[])
    assert err.value.body["param"] == "input"


def test_an_endpoint_with_vectors_of_another_size_is_not_served(client):
    with pytest.raises(openai.APIStatusError) as err:
        client.embeddings.create(model="embed-wrong-size", input="x")
    assert err.value.status_code == 503
    assert "8 dimensions, not 16" in err.value.body["message"]
