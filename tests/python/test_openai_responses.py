"""The official `openai` SDK's Responses API (`responses.create`, `responses.stream`) and the
`openai-agents` SDK against a running sidecar.

Started by tests/tests/sdk.rs with the features test_openai_sdk.py describes, plus:
  openai-native     -> an `openai` endpoint: the Responses body is passed through to /v1/responses
  compat-responses  -> an `openai_compatible` endpoint with `api: responses`: passed through too
  azure             -> Azure OpenAI: passed through to /openai/v1/responses
Every other feature's endpoint speaks another API, so the sidecar translates. Replies are
checked against the SDK's own pydantic models (validated, not merely constructed), so a field
the published schema requires and the sidecar leaves out fails here.
"""

import asyncio
import json
import os
import urllib.error
import urllib.request

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

BASE_URL = os.environ["SPILLWAY_BASE_URL"]
NATIVE = ["openai-native", "compat-responses", "azure"]
TRANSLATED = ["chat", "claude", "bedrock", "bedrock-invoke", "gemini", "vertex-claude"]
FEATURES = NATIVE + TRANSLATED
# The endpoint each feature's one tier is called (`chat` routes to `primary`).
ENDPOINT = {"chat": "primary"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture()
def client():
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused-by-the-sidecar", max_retries=0)


def post(body):
    req = urllib.request.Request(
        f"{BASE_URL}/v1/responses", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def sse_events(raw):
    """(event name, data) of each SSE event."""
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
        if data is not None:
            out.append((name, data))
    return out


@pytest.mark.parametrize("feature", FEATURES)
def test_create(client, feature):
    raw = client.responses.with_raw_response.create(model=feature, instructions="Be brief.", input="Say hello")
    resp = raw.parse()
    assert resp.status == "completed"
    assert resp.output_text.startswith("Hello from primary.")
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens > 0
    # The published schema, strictly: required fields present, types right.
    Response.model_validate(json.loads(raw.content))
    assert raw.headers["x-spillway-endpoint"] == ENDPOINT.get(feature, feature)


@pytest.mark.parametrize("feature", FEATURES)
def test_stream(client, feature):
    with client.responses.stream(model=feature, input=[{"role": "user", "content": "Say hello"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds
    assert final.output_text.startswith("Hello from primary.")
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("feature", FEATURES)
def test_stream_events_match_the_published_schema(feature):
    status, headers, raw = post({"model": feature, "input": "Say hello", "stream": True, "tools": [WEATHER]})
    assert status == 200, raw
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == sorted(set(numbers)), numbers
    for name, data in events:
        STREAM_EVENT.validate_python(data)
        assert name == data["type"]
    completed = events[-1][1]["response"]
    Response.model_validate(completed)
    call = next(item for item in completed["output"] if item["type"] == "function_call")
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "fake-city"}


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("streamed", [False, True])
def test_function_call_loop(client, feature, streamed):
    question = [{"role": "user", "content": "Weather in Paris?"}]

    def ask(items):
        if not streamed:
            return client.responses.create(model=feature, input=items, tools=[WEATHER])
        with client.responses.stream(model=feature, input=items, tools=[WEATHER]) as stream:
            for _ in stream:
                pass
            return stream.get_final_response()

    first = ask(question)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first.output
    assert json.loads(calls[0].arguments)["city"]
    # The SDK's own output items go back as input, as agent loops do.
    history = question + [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"})
    second = ask(history)
    assert second.output_text.startswith("Hello from primary.")


def test_built_in_tools_are_refused_by_name_where_nothing_speaks_the_responses_api(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="claude", input="Search the web", tools=[{"type": "web_search"}])
    assert err.value.body["code"] == "unsupported_by_every_endpoint"
    assert "web_search tool" in err.value.body["message"]


def test_built_in_tools_pass_through_to_an_endpoint_that_speaks_the_responses_api(client):
    resp = client.responses.create(model="openai-native", input="Search the web", tools=[{"type": "web_search"}])
    assert resp.output_text


def test_previous_response_id_needs_an_endpoint_that_keeps_responses(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gemini", input="And then?", previous_response_id="resp_earlier")
    assert "previous_response_id" in err.value.body["message"]
    resp = client.responses.create(model="openai-native", input="And then?", previous_response_id="resp_earlier")
    assert resp.output_text


def test_bad_input_gets_an_openai_error_naming_the_field():
    status, _, raw = post({"model": "claude", "input": 7})
    assert status == 400
    body = json.loads(raw)
    assert body["error"]["param"] == "input" and body["error"]["type"] == "invalid_request_error"
    status, _, raw = post({"model": "claude", "input": [{"type": "function_call", "call_id": "c", "name": "f",
                                                         "arguments": "{not json"}]})
    assert status == 400 and "input[0].arguments" in json.loads(raw)["error"]["message"]


def test_an_agent_with_a_tool_runs_through_a_translated_provider():
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    seen = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        seen.append(city)
        return f"18C and sunny in {city}"

    async def run(feature, streamed):
        model = OpenAIResponsesModel(
            model=feature,
            openai_client=openai.AsyncOpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0))
        agent = Agent(name="forecaster", instructions="Answer with the weather.", tools=[get_weather], model=model)
        config = RunConfig(tracing_disabled=True)
        if not streamed:
            return await Runner.run(agent, "Weather in Paris?", run_config=config)
        result = Runner.run_streamed(agent, "Weather in Paris?", run_config=config)
        async for _ in result.stream_events():
            pass
        return result

    for feature in ["claude", "bedrock", "gemini"]:
        for streamed in [False, True]:
            seen.clear()
            result = asyncio.run(run(feature, streamed))
            assert seen == ["fake-city"], (feature, streamed, seen)
            assert str(result.final_output).startswith("Hello from primary."), (feature, streamed)


@pytest.mark.parametrize("feature", ["midstream", "truncated"])
def test_a_stream_that_fails_after_its_first_token_ends_as_a_failed_response(client, feature):
    """After the commit point a failure cannot fall back: the caller gets Responses' own `error`
    event and a `response.failed`, never a stream that just stops."""
    with client.responses.stream(model=feature, input="Say hello") as stream:
        events = list(stream)
    received = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert received.startswith("Hello from"), "the deltas before the failure arrived"
    kinds = [e.type for e in events]
    assert "error" in kinds and kinds[-1] == "response.failed", kinds
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message, failed
    assert "response.completed" not in kinds
    # Strictly as the published types define them, the failure events included.
    status, _, raw = post({"model": feature, "input": "Say hello", "stream": True})
    assert status == 200
    for name, data in sse_events(raw):
        STREAM_EVENT.validate_python(data)
        assert name == data["type"]
