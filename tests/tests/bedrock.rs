//! Bedrock end to end: SigV4-signed Converse and InvokeModel requests (verified by the fake),
//! event-stream replies translated for OpenAI and Anthropic clients, throttling and exception
//! frames, and model ids that must be percent-encoded in the path.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use aws_credential_types::Credentials;
use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN";

fn creds(secret: &str) -> Credentials {
    Credentials::new(AKID, secret, Some(TOKEN.into()), None, "test")
}

async fn setup() -> (FakeProvider, FakeProvider, TestSidecar) {
    // SAFETY: set before the sidecar (and any other thread) reads the environment; nextest
    // runs each test in its own process.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", AKID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::set_var("AWS_SESSION_TOKEN", TOKEN);
    }
    let mut cfg = FakeConfig::named("bedrock");
    cfg.aws = Some((creds(SECRET), "us-east-1".into()));
    let fake = FakeProvider::start(cfg).await.unwrap();
    // A "region" whose service knows other credentials: every signature we send it is wrong.
    let mut other = FakeConfig::named("strict");
    other.aws = Some((creds("a-different-secret"), "us-east-1".into()));
    let strict = FakeProvider::start(other).await.unwrap();
    let (a, s) = (fake.addr, strict.addr);
    let yaml = format!(
        r#"
endpoints:
  converse: {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: "us.anthropic.claude-3-5-haiku-20241022-v1:0" }}
  pt-arn:   {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456" }}
  invoke:   {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: "anthropic.claude-3-5-haiku-20241022-v1:0", api: invoke }}
  throttled: {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: m, headers: {{ x-fake-status: "429" }} }}
  breaking: {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: m, headers: {{ x-fake-error-after: "2" }} }}
  invoke-breaking: {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: m, api: invoke, headers: {{ x-fake-error-after: "2" }} }}
  invoke-rejecting: {{ provider: bedrock, region: us-east-1, base_url: "http://{a}", model: m, api: invoke, headers: {{ x-fake-status: "400" }} }}
  wrong-key: {{ provider: bedrock, region: us-east-1, base_url: "http://{s}", model: m }}
  backup:   {{ provider: openai_compatible, base_url: "http://{a}/v1", model: gpt-backup }}
features:
  converse: {{ hierarchy: [converse] }}
  pt: {{ hierarchy: [pt-arn] }}
  invoke: {{ hierarchy: [invoke] }}
  spill: {{ hierarchy: [throttled, backup] }}
  breaks: {{ hierarchy: [breaking] }}
  invoke-breaks: {{ hierarchy: [invoke-breaking] }}
  invoke-rejects: {{ hierarchy: [invoke-rejecting] }}
  unsigned: {{ hierarchy: [wrong-key, backup] }}
"#
    );
    (fake, strict, TestSidecar::start(&yaml).await.unwrap())
}

async fn openai_call(sc: &TestSidecar, feature: &str, extra: Value) -> Reply {
    let mut body = json!({"model": feature, "max_tokens": 64, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

async fn anthropic_call(sc: &TestSidecar, feature: &str, extra: Value) -> Reply {
    let mut body = json!({"model": feature, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    TestClient::default()
        .post_json(&sc.url("/v1/messages"), &[("anthropic-version", "2023-06-01")], body.to_string())
        .await
        .unwrap()
}

#[tokio::test]
async fn converse_signed_and_translated_for_an_openai_client() {
    let (fake, _strict, sc) = setup().await;
    let r = openai_call(&sc, "converse", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from bedrock."));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse");
    let auth = sent.headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
    assert!(auth.contains("/us-east-1/bedrock/aws4_request") && auth.contains("x-amz-security-token"), "{auth}");
    assert_eq!(sent.body["system"][0]["text"], "Be brief.");
    assert_eq!(sent.body["inferenceConfig"]["maxTokens"], 64);

    let r = openai_call(&sc, "converse", json!({"stream": true, "stream_options": {"include_usage": true}})).await;
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let chunks = r.sse_data();
    let text: String = chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("Hello from bedrock."), "{text}");
    assert!(chunks.last().unwrap()["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.recorded()[1].path, "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream");
}

#[tokio::test]
async fn converse_tool_use_streams_to_both_clients() {
    let (_fake, _strict, sc) = setup().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let r = openai_call(
        &sc,
        "converse",
        json!({"stream": true,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": schema}}]}),
    )
    .await;
    let chunks = r.sse_data();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "fake-city"}));

    let r = anthropic_call(&sc, "converse", json!({"tools": [{"name": "weather", "input_schema": schema}]})).await;
    let v = r.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "fake-city"}));
}

#[tokio::test]
async fn provisioned_throughput_arns_are_percent_encoded_in_the_path() {
    let (fake, _strict, sc) = setup().await;
    let r = openai_call(&sc, "pt", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        fake.recorded()[0].path,
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc123def456/converse"
    );
}

#[tokio::test]
async fn invoke_model_carries_anthropic_bodies() {
    let (fake, _strict, sc) = setup().await;
    let r = anthropic_call(&sc, "invoke", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["content"][0]["text"].as_str().unwrap().starts_with("Hello from bedrock."));
    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke");
    assert_eq!(sent.body["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent.body.get("model").is_none() && sent.body.get("stream").is_none());

    let r = anthropic_call(&sc, "invoke", json!({"stream": true})).await;
    let events = r.sse_data();
    assert_eq!(events.first().unwrap()["type"], "message_start");
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    assert_eq!(
        fake.recorded()[1].path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    );
    let r = openai_call(&sc, "invoke", json!({"stream": true})).await;
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
}

/// An Anthropic caller's own body goes to InvokeModel — fields spillway does not know included —
/// with the model and stream flag moved where Bedrock wants them and the caller's betas in the
/// body; the reply stream is Bedrock's Anthropic events, re-framed as SSE unchanged.
#[tokio::test]
async fn an_anthropic_callers_body_passes_through_invoke_model() {
    let (fake, _strict, sc) = setup().await;
    let body = json!({"model": "invoke", "max_tokens": 64, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
    let headers = [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "context-management-2025-06-27, interleaved-thinking-2025-05-14"),
    ];
    let r = TestClient::default().post_json(&sc.url("/v1/messages"), &headers, body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &fake.recorded()[0];
    assert_eq!(sent.path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream");
    assert_eq!(sent.body["thinking"], body["thinking"]);
    assert_eq!(sent.body["context_management"], body["context_management"]);
    assert_eq!(sent.body["messages"], body["messages"], "cache_control and all");
    assert_eq!(
        sent.body["anthropic_beta"],
        json!(["context-management-2025-06-27", "interleaved-thinking-2025-05-14"])
    );
    assert_eq!(sent.body["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent.body.get("model").is_none() && sent.body.get("stream").is_none(), "{}", sent.body);
    assert_eq!(r.header("x-spillway-dropped"), "", "nothing dropped on the way");
    // The events are Bedrock's own, unchanged: its invocation metrics are still on `message_stop`.
    let events = r.sse_data();
    assert_eq!(events.first().unwrap()["type"], "message_start");
    let stop = events.last().unwrap();
    assert_eq!(stop["type"], "message_stop");
    assert!(stop["amazon-bedrock-invocationMetrics"]["outputTokenCount"].as_u64().is_some(), "{stop}");
    assert!(r.text().contains("event: content_block_delta\ndata: "), "SSE with event names: {}", r.text());

    // Bedrock's refusals are AWS-shaped: the caller gets them in Anthropic's shape.
    let r = anthropic_call(&sc, "invoke-rejects", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error", "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["message"], "fake: Malformed input request");
}

#[tokio::test]
async fn throttling_falls_back_and_bad_signatures_are_auth_failures() {
    let (_fake, strict, sc) = setup().await;
    let r = openai_call(&sc, "spill", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-endpoint"), "backup");
    let r = openai_call(&sc, "unsigned", json!({})).await;
    assert_eq!(r.header("x-spillway-endpoint"), "backup", "{}", r.text());
    assert_eq!(strict.hits(), 1, "the request reached the strict service and was refused there");
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(r#"spillway_attempts_total{feature="spill",endpoint="throttled",outcome="throttled"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"endpoint="wrong-key",outcome="status_403"} 1"#), "{metrics}");
}

#[tokio::test]
async fn exception_frames_mid_stream_reach_clients_as_errors() {
    let (_fake, _strict, sc) = setup().await;
    let r = openai_call(&sc, "breaks", json!({"stream": true})).await;
    let last = r.sse_data().pop().unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("throttlingException"), "{}", r.text());
    assert!(!r.text().contains("[DONE]"));

    let r = anthropic_call(&sc, "invoke-breaks", json!({"stream": true})).await;
    let text = r.text();
    assert!(text.trim_end().rsplit("\n\n").next().unwrap().starts_with("event: error\n"), "{text}");
}
