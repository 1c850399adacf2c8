"""The official `anthropic` SDK against a running sidecar (started by tests/tests/sdk.rs).

Features: chat -> an OpenAI endpoint; claude -> an Anthropic endpoint; flaky -> an OpenAI
endpoint answering 503, an Anthropic endpoint answering 529, then an OpenAI backup;
midstream / truncated -> upstreams that fail after two chunks.
"""

import json
import os
import urllib.request

import anthropic
import pytest

BASE_URL = os.environ["SPILLWAY_BASE_URL"]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
HELLO = [{"role": "user", "content": "Say hello"}]
PROVIDERS = ["chat", "claude", "azure", "bedrock", "bedrock-invoke", "gemini", "vertex-claude"]
BUSY = ["bedrock-busy", "gemini-busy", "claude-busy"]


@pytest.fixture()
def client():
    return anthropic.Anthropic(base_url=BASE_URL, api_key="unused-by-the-sidecar", max_retries=0)


@pytest.mark.parametrize("feature", PROVIDERS)
def test_non_streaming(client, feature):
    raw = client.messages.with_raw_response.create(model=feature, max_tokens=64, system="Be brief.", messages=HELLO)
    message = raw.parse()
    assert message.type == "message"
    assert message.content[0].text.startswith("Hello from primary.")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    assert raw.headers["x-spillway-request-id"].startswith("req_")


@pytest.mark.parametrize("feature", PROVIDERS)
def test_streaming(client, feature):
    with client.messages.stream(model=feature, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from primary.")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("feature", PROVIDERS)
def test_tool_use(client, feature):
    message = client.messages.create(
        model=feature, max_tokens=64, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert message.stop_reason == "tool_use"
    call = next(b for b in message.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert set(call.input) == {"city", "days"}

    # The tool result goes back in the next turn, across protocols too.
    follow_up = client.messages.create(
        model=feature, max_tokens=64, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, rain"}]}])
    assert follow_up.type == "message"


@pytest.mark.parametrize("feature", PROVIDERS)
def test_streamed_tool_use(client, feature):
    with client.messages.stream(model=feature, max_tokens=64, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert set(call.input) == {"city", "days"}
    assert final.stop_reason == "tool_use"


def test_fallback_across_protocols(client):
    raw = client.messages.with_raw_response.create(model="flaky", max_tokens=64, messages=HELLO)
    assert raw.parse().content[0].text.startswith("Hello from backup.")
    assert raw.headers["x-spillway-endpoint"] == "backup"
    assert raw.headers["x-spillway-attempts"] == "3"


@pytest.mark.parametrize("feature", BUSY)
def test_a_throttled_provider_is_a_rate_limit_error(client, feature):
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=feature, max_tokens=64, messages=HELLO)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_unknown_feature(client):
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-3-opus", max_tokens=64, messages=HELLO)
    assert "known features" in info.value.message


def test_malformed_request(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="claude", max_tokens=64, messages=[])
    assert "messages" in info.value.message


@pytest.mark.parametrize("feature", ["midstream", "truncated"])
def test_mid_stream_failure_raises(client, feature):
    received = ""
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(model=feature, max_tokens=64, messages=HELLO) as stream:
            for text in stream.text_stream:
                received += text
    assert received.startswith("Hello from")


def requests_seen(feature):
    """Requests the sidecar received for `feature`, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{BASE_URL}/metrics") as reply:
        text = reply.read().decode()
    prefix = f'spillway_requests_total{{feature="{feature}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_an_overloaded_hierarchy_is_not_retried_by_the_sdk():
    # The SDK's defaults retry a 529 twice; an Anthropic endpoint answering `overloaded_error`
    # with no retry-after, and nowhere else to go, gets `x-should-retry: false` so the SDK does
    # not pile onto an overloaded provider.
    default = anthropic.Anthropic(base_url=BASE_URL, api_key="unused-by-the-sidecar")
    assert default.max_retries == 2
    with pytest.raises(anthropic.APIStatusError) as info:
        default.messages.create(model="down-anthropic", max_tokens=64, messages=HELLO)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert requests_seen("down-anthropic") == 1


THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize("feature", ["bedrock", "gemini"])
def test_streamed_tool_loop_with_thinking(client, feature):
    """A streamed tool loop with thinking on Claude-on-Converse and Gemini: the reasoning comes
    back as thinking blocks, and handing the whole turn back (reasoning, signatures, call) is
    accepted by a provider that checks the signatures it gave."""
    first_turn = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(model=feature, max_tokens=2048, thinking=THINKING, tools=[WEATHER],
                                tool_choice={"type": "any"}, messages=first_turn) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds[0] == "thinking", kinds
    assert "Thinking it over." in final.content[0].thinking
    if feature == "bedrock":
        assert final.content[0].signature.startswith("fake-sig-")
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather"
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, rain"}]}
    follow_up = client.messages.create(
        model=feature, max_tokens=2048, thinking=THINKING, tools=[WEATHER],
        messages=first_turn + [{"role": "assistant", "content": final.content}, result])
    assert follow_up.type == "message"
    if feature == "bedrock":
        # The provider does check: reasoning it did not sign is refused.
        forged = [{"type": "thinking", "thinking": "Thinking it over.", "signature": "forged"}, call]
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model=feature, max_tokens=2048, thinking=THINKING, tools=[WEATHER],
                                   messages=first_turn + [{"role": "assistant", "content": forged}, result])
    assert follow_up.content[0].type == "thinking"
    if feature == "gemini":
        assert follow_up.usage.output_tokens > 5, "thinking tokens are counted into the output"


def test_prompt_cache_usage_on_bedrock(client):
    """Cache breakpoints reach Converse as cache points, and the cache reads come back in
    Anthropic's usage fields."""
    message = client.messages.create(
        model="bedrock", max_tokens=64,
        system=[{"type": "text", "text": "A long manual. " * 50, "cache_control": {"type": "ephemeral"}}],
        messages=HELLO)
    usage = message.usage
    assert usage.cache_read_input_tokens > 0
    assert usage.input_tokens > 0
    assert usage.cache_creation_input_tokens == 0


def test_prompt_cache_usage_on_bedrock_streamed(client):
    system = [{"type": "text", "text": "A long manual. " * 50, "cache_control": {"type": "ephemeral"}}]
    with client.messages.stream(model="bedrock", max_tokens=64, system=system, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens > 0
    assert final.usage.output_tokens > 0


# Every provider that counts tokens: Anthropic's own count_tokens, Claude on Vertex, Bedrock
# CountTokens (Converse and InvokeModel bodies), Gemini's countTokens, OpenAI's input_tokens.
COUNTERS = ["claude", "vertex-claude", "bedrock", "bedrock-invoke", "gemini", "azure", "openai-native"]


def test_count_tokens_is_the_same_count_on_every_provider(client):
    counts = {}
    for feature in COUNTERS:
        raw = client.messages.with_raw_response.count_tokens(
            model=feature, system="Be brief.", tools=[WEATHER],
            messages=[{"role": "user", "content": "How many tokens is this question?"}])
        counts[feature] = raw.parse().input_tokens
        assert raw.headers["x-spillway-endpoint"] == feature
    # The fakes count the words of the texts wherever each format puts them: the translation
    # carried the same system prompt, message and tool description to every one.
    assert set(counts.values()) == {len("Be brief. How many tokens is this question? Current weather for a city".split())}, counts


def test_count_tokens_falls_back_and_refuses_in_anthropic_shape(client):
    assert client.messages.count_tokens(model="count-fallback", messages=HELLO).input_tokens == 2
    # An OpenAI-compatible server offers no token counting: the caller hears why, as Anthropic's error.
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.count_tokens(model="chat", messages=HELLO)
    assert err.value.body["type"] == "error"
    assert "token counting" in err.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.count_tokens(model="claude", messages=[])
    assert "messages" in err.value.body["error"]["message"]


def test_unknown_paths_answer_in_anthropic_shape():
    req = urllib.request.Request(f"{BASE_URL}/v1/messages/batches", data=b"{}", headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    body = json.loads(err.value.read())
    assert err.value.code == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"
