//! Every inbound × outbound protocol pair through real sockets: OpenAI and Anthropic clients on
//! OpenAI, Azure OpenAI and Anthropic endpoints, streaming and not, tools, errors, fallback
//! across protocols.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};

const KEY: &str = "sk-translation-test";

async fn setup() -> (FakeProvider, TestSidecar) {
    // SAFETY: set before any other thread reads the environment (one test per process).
    unsafe { std::env::set_var("SPILLWAY_TEST_KEY", KEY) };
    let mut cfg = FakeConfig::named("fake");
    cfg.require_key = Some(KEY.into());
    let fake = FakeProvider::start(cfg).await.unwrap();
    let a = fake.addr;
    let yaml = format!(
        r#"
endpoints:
  oai:    {{ provider: openai_compatible, base_url: "http://{a}/v1", model: gpt-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }} }}
  claude: {{ provider: anthropic, base_url: "http://{a}", model: claude-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }} }}
  claude-down: {{ provider: anthropic, base_url: "http://{a}", model: claude-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }}, headers: {{ x-fake-status: "529" }} }}
  claude-bad: {{ provider: anthropic, base_url: "http://{a}", model: claude-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }}, headers: {{ x-fake-status: "400" }} }}
  claude-flaky-stream: {{ provider: anthropic, base_url: "http://{a}", model: claude-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }}, headers: {{ x-fake-error-after: "2" }} }}
  oai-flaky-stream: {{ provider: openai_compatible, base_url: "http://{a}/v1", model: gpt-fake, auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }}, headers: {{ x-fake-error-after: "2" }} }}
  azure:  {{ provider: azure_openai, base_url: "http://{a}", model: my-deployment, api_version: "2024-10-21", auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }} }}
  azure-entra: {{ provider: azure_openai, base_url: "http://{a}", model: my-deployment, auth: {{ kind: bearer_token, env: SPILLWAY_TEST_KEY }} }}
features:
  to-openai: {{ hierarchy: [oai] }}
  to-claude: {{ hierarchy: [claude] }}
  to-azure: {{ hierarchy: [azure] }}
  to-azure-entra: {{ hierarchy: [azure-entra] }}
  claude-then-openai: {{ hierarchy: [claude-down, oai] }}
  claude-rejects: {{ hierarchy: [claude-bad, oai] }}
  claude-breaks: {{ hierarchy: [claude-flaky-stream] }}
  openai-breaks: {{ hierarchy: [oai-flaky-stream] }}
  claude-or-openai: {{ hierarchy: [claude, oai] }}
  strict-claude-or-openai: {{ hierarchy: [claude, oai], translation: strict }}
  strict-claude: {{ hierarchy: [claude], translation: strict }}
"#
    );
    (fake, TestSidecar::start(&yaml).await.unwrap())
}

async fn openai_call(sc: &TestSidecar, feature: &str, extra: Value) -> Reply {
    let mut body = json!({"model": feature, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

async fn anthropic_call(sc: &TestSidecar, feature: &str, extra: Value) -> Reply {
    let mut body = json!({"model": feature, "max_tokens": 256, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let headers = [("anthropic-version", "2023-06-01"), ("anthropic-beta", "tools-2024-05-16")];
    TestClient::default().post_json(&sc.url("/v1/messages"), &headers, body.to_string()).await.unwrap()
}

fn tool() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

#[tokio::test]
async fn openai_client_on_an_anthropic_endpoint() {
    let (fake, sc) = setup().await;
    let r = openai_call(&sc, "to-claude", json!({"max_tokens": 100})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from fake."));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.body["model"], "claude-fake");
    assert_eq!(sent.body["system"], "Be brief.");
    assert_eq!(sent.body["max_tokens"], 100);

    let r = openai_call(&sc, "to-claude", json!({"stream": true, "stream_options": {"include_usage": true}})).await;
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let chunks = r.sse_data();
    let text: String = chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("Hello from fake."), "{text}");
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.recorded()[1].body["max_tokens"], 4096, "Anthropic requires max_tokens; a default is sent");
}

#[tokio::test]
async fn openai_client_tool_calls_through_an_anthropic_endpoint() {
    let (_fake, sc) = setup().await;
    let tools = json!({"tools": [{"type": "function", "function": {"name": "weather", "parameters": tool()}}]});
    let v = openai_call(&sc, "to-claude", tools.clone()).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "fake-city"})
    );

    let mut streamed = tools;
    streamed["stream"] = json!(true);
    let chunks = openai_call(&sc, "to-claude", streamed).await.sse_data();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "fake-city"}));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn anthropic_client_on_an_openai_endpoint() {
    let (fake, sc) = setup().await;
    let r = anthropic_call(&sc, "to-openai", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert!(v["content"][0]["text"].as_str().unwrap().starts_with("Hello from fake."));
    assert_eq!(v["stop_reason"], "end_turn");
    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert!(sent.headers.get("anthropic-version").is_none(), "Anthropic headers never reach another protocol");
    assert_eq!(sent.body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(sent.body["max_tokens"], 256);

    let r = anthropic_call(
        &sc,
        "to-openai",
        json!({"stream": true, "tools": [{"name": "weather", "input_schema": tool()}],
        "tool_choice": {"type": "tool", "name": "weather"}}),
    )
    .await;
    let events = r.sse_data();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(&types[types.len() - 2..], ["message_delta", "message_stop"]);
    let json: String = events.iter().filter_map(|e| e["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"city": "fake-city"}));
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn anthropic_to_anthropic_passes_the_body_and_version_headers_through() {
    let (fake, sc) = setup().await;
    let r = anthropic_call(&sc, "to-claude", json!({"top_k": 5, "a_future_field": {"x": 1}, "stream": true})).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("event: message_stop"), "{}", r.text());
    let sent = &fake.recorded()[0];
    assert_eq!(sent.body["a_future_field"], json!({"x": 1}), "unknown fields survive pass-through");
    assert_eq!(sent.body["model"], "claude-fake");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["anthropic-beta"], "tools-2024-05-16");
}

#[tokio::test]
async fn azure_openai_uses_the_deployment_url_and_api_key_header() {
    let (fake, sc) = setup().await;
    let r = openai_call(&sc, "to-azure", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/openai/deployments/my-deployment/chat/completions");
    assert_eq!(sent.headers["api-key"], KEY);
    assert!(sent.headers.get("authorization").is_none());
    assert!(sent.body.get("model").is_none(), "Azure takes the model from the deployment");
    let r = anthropic_call(&sc, "to-azure", json!({"stream": true})).await;
    assert!(r.text().contains("event: message_stop"));

    // Entra ID: the token goes in Authorization, the default api-version in the URL.
    let r = openai_call(&sc, "to-azure-entra", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &fake.recorded()[2];
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert!(sent.headers.get("api-key").is_none());
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
}

#[tokio::test]
async fn fallback_crosses_protocols_and_errors_come_in_the_callers_format() {
    let (_fake, sc) = setup().await;
    let r = anthropic_call(&sc, "claude-then-openai", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-endpoint"), "oai");
    assert_eq!(r.json()["type"], "message");

    // A 400 from an Anthropic endpoint reaches an OpenAI caller as an OpenAI error.
    let r = openai_call(&sc, "claude-rejects", json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["message"], "fake: bad request");

    let r = anthropic_call(&sc, "nope", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");

    let bad = TestClient::default()
        .post_json(
            &sc.url("/v1/messages"),
            &[],
            json!({"model": "to-claude", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    assert!(bad.json()["error"]["message"].as_str().unwrap().contains("max_tokens"));
}

#[tokio::test]
async fn mid_stream_errors_reach_each_client_in_its_own_protocol() {
    let (_fake, sc) = setup().await;
    let r = openai_call(&sc, "claude-breaks", json!({"stream": true})).await;
    let last = r.sse_data().pop().unwrap();
    assert_eq!(last["error"]["message"], "Overloaded", "{}", r.text());
    assert!(!r.text().contains("[DONE]"));

    let r = anthropic_call(&sc, "openai-breaks", json!({"stream": true})).await;
    let text = r.text();
    let last_event = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last_event.starts_with("event: error\n"), "{text}");
    assert!(!text.contains("message_stop"));
}

/// A field the endpoint cannot carry is never lost silently. One that only tunes the answer is
/// dropped and named in `x-spillway-dropped`; one that changes the answer (`n: 2`) makes the
/// endpoint ineligible, and the next tier serves it; with no tier left the caller is told which
/// field, in its own format, without anything being sent.
#[tokio::test]
async fn fields_a_translation_cannot_carry_are_named_or_move_the_request_on() {
    let (fake, sc) = setup().await;
    let r = openai_call(&sc, "to-claude", json!({"seed": 7, "temperature": 0.3, "max_tokens": 50})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-dropped"), "seed, temperature");
    let sent = &fake.recorded()[0].body;
    assert!(sent.get("seed").is_none() && sent.get("temperature").is_none(), "{sent}");

    // Several choices cannot be had from Claude: the OpenAI tier answers, untranslated.
    let r = openai_call(&sc, "claude-or-openai", json!({"n": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-endpoint"), "oai");
    assert_eq!(r.header("x-spillway-dropped"), "");
    assert_eq!(fake.recorded().last().unwrap().body["n"], 2);
    // … and with Claude alone, nothing is sent and the caller learns why.
    let hits = fake.hits();
    let r = openai_call(&sc, "to-claude", json!({"n": 2})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unsupported_by_every_endpoint");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`n`"), "{}", r.text());
    assert_eq!(fake.hits(), hits, "nothing sent");

    // A strict feature drops nothing: the tier that would have to is skipped.
    let r = openai_call(&sc, "strict-claude-or-openai", json!({"seed": 7})).await;
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "oai"), "{}", r.text());
    let r = openai_call(&sc, "strict-claude", json!({"seed": 7})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("strict"), "{}", r.text());
    // An Anthropic caller's own fields are named the same way on an OpenAI endpoint.
    let r = anthropic_call(&sc, "to-openai", json!({"top_k": 5, "service_tier": "auto"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-dropped"), "service_tier, top_k");
    assert_eq!(r.json()["type"], "message");
}

/// Claude Code sends system messages mid-conversation: the Messages API takes them, so the
/// sidecar does too — passed through to Anthropic as sent, joined to the system instructions
/// where a provider takes them in one place. A path it does not serve under `/v1/messages`
/// answers in Anthropic's shape.
#[tokio::test]
async fn system_messages_mid_conversation_and_anthropic_shaped_404s() {
    let (fake, sc) = setup().await;
    let turns = json!({"messages": [{"role": "user", "content": "hi"},
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "again"}]});
    let r = anthropic_call(&sc, "to-claude", turns.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.recorded()[0].body["messages"][1]["role"], "system", "passed through as sent");
    let r = anthropic_call(&sc, "to-openai", turns).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &fake.recorded()[1].body["messages"];
    let systems: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(systems, ["Be brief.", "Answer in French."], "{sent}");

    let r = TestClient::default()
        .post_json(&sc.url("/v1/messages/batches"), &[("anthropic-version", "2023-06-01")], "{}".to_owned())
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error", "Anthropic's shape: {}", r.text());
    assert_eq!(r.json()["error"]["type"], "not_found_error");
}
