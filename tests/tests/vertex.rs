//! Vertex AI end to end: Gemini and Claude-on-Vertex endpoints behind a Google bearer token from
//! the (fake) metadata server, cached and refreshed before expiry.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use serde_json::{Value, json};
use spillway_dataplane::upstream::gcp::{GcpToken, REFRESH_BEFORE_EXPIRY, Source};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};
use std::time::Duration;

const TOKEN: &str = "ya29.fake-access-token";

async fn setup() -> (FakeProvider, FakeProvider, TestSidecar) {
    let mut m = FakeConfig::named("metadata");
    m.gcp_token = Some(TOKEN.into());
    let metadata = FakeProvider::start(m).await.unwrap();
    // SAFETY: set before the sidecar (or any other thread) reads it; one test per process.
    unsafe { std::env::set_var("GCE_METADATA_HOST", metadata.addr.to_string()) };
    let mut v = FakeConfig::named("vertex");
    v.gcp_token = Some(TOKEN.into());
    let vertex = FakeProvider::start(v).await.unwrap();
    let a = vertex.addr;
    let yaml = format!(
        r#"
endpoints:
  gemini: {{ provider: vertex, region: us-central1, project: my-project, base_url: "http://{a}", model: gemini-2.0-flash-001 }}
  claude: {{ provider: vertex, region: us-east5, project: my-project, base_url: "http://{a}", api: anthropic, model: "claude-sonnet-4@20250514" }}
  gemini-busy: {{ provider: vertex, region: us-central1, project: my-project, base_url: "http://{a}", model: g, headers: {{ x-fake-status: "429" }} }}
  gemini-breaking: {{ provider: vertex, region: us-central1, project: my-project, base_url: "http://{a}", model: g, headers: {{ x-fake-error-after: "2" }} }}
  backup: {{ provider: openai_compatible, base_url: "http://{a}/v1", model: gpt-backup }}
features:
  gemini: {{ hierarchy: [gemini] }}
  claude: {{ hierarchy: [claude] }}
  spill: {{ hierarchy: [gemini-busy, backup] }}
  breaks: {{ hierarchy: [gemini-breaking] }}
"#
    );
    (metadata, vertex, TestSidecar::start(&yaml).await.unwrap())
}

async fn call(sc: &TestSidecar, path: &str, body: Value) -> Reply {
    TestClient::default()
        .post_json(&sc.url(path), &[("anthropic-version", "2023-06-01")], body.to_string())
        .await
        .unwrap()
}

fn openai(feature: &str, extra: Value) -> Value {
    let mut b = json!({"model": feature, "max_tokens": 50, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

#[tokio::test]
async fn gemini_for_an_openai_client_with_a_cached_metadata_token() {
    let (metadata, vertex, sc) = setup().await;
    let r = call(&sc, "/v1/chat/completions", openai("gemini", json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from vertex."));
    let sent = &vertex.recorded()[0];
    assert_eq!(
        sent.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent"
    );
    assert_eq!(sent.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(sent.body["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 50);

    let r = call(
        &sc,
        "/v1/chat/completions",
        openai("gemini", json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let chunks = r.sse_data();
    let text: String = chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("Hello from vertex."), "{text}");
    assert!(chunks.last().unwrap()["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let sent = &vertex.recorded()[1];
    assert!(sent.path.ends_with(":streamGenerateContent"));
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    assert_eq!(metadata.hits(), 1, "one token fetch serves every request until it nears expiry");
}

#[tokio::test]
async fn gemini_tool_calls_reach_both_clients() {
    let (_metadata, _vertex, sc) = setup().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let r = call(
        &sc,
        "/v1/chat/completions",
        openai(
            "gemini",
            json!({"stream": true,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": schema}}]}),
        ),
    )
    .await;
    let chunks = r.sse_data();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "fake-city"}));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));

    let body = json!({"model": "gemini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "weather", "input_schema": schema}], "tool_choice": {"type": "tool", "name": "weather"}});
    let v = call(&sc, "/v1/messages", body).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "fake-city"}));
}

#[tokio::test]
async fn claude_on_vertex_passes_anthropic_bodies_through() {
    let (_metadata, vertex, sc) = setup().await;
    let body = json!({"model": "claude", "max_tokens": 50, "stream": true, "top_k": 3, "messages": [{"role": "user", "content": "hi"}]});
    let r = call(&sc, "/v1/messages", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("event: message_stop"));
    let sent = &vertex.recorded()[0];
    assert_eq!(
        sent.path,
        "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    );
    assert_eq!(sent.body["anthropic_version"], "vertex-2023-10-16");
    assert!(sent.body.get("model").is_none());
    assert_eq!(sent.body["stream"], true, "unlike Bedrock, stream stays in the body");
    assert_eq!(sent.body["top_k"], 3);

    // The caller's betas go along as the same header.
    let headers = [("anthropic-version", "2023-06-01"), ("anthropic-beta", "context-1m-2025-08-07")];
    let body = json!({"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/messages"), &headers, body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(vertex.recorded()[1].headers["anthropic-beta"], "context-1m-2025-08-07");

    let r = call(&sc, "/v1/chat/completions", openai("claude", json!({}))).await;
    assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from vertex."));
    assert!(vertex.recorded()[2].path.ends_with(":rawPredict"));
}

#[tokio::test]
async fn resource_exhausted_falls_back_and_stream_errors_are_reported() {
    let (_metadata, _vertex, sc) = setup().await;
    let r = call(&sc, "/v1/chat/completions", openai("spill", json!({}))).await;
    assert_eq!(r.header("x-spillway-endpoint"), "backup", "{}", r.text());
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(metrics.contains(r#"endpoint="gemini-busy",outcome="throttled"} 1"#), "{metrics}");

    let r = call(&sc, "/v1/chat/completions", openai("breaks", json!({"stream": true}))).await;
    let last = r.sse_data().pop().unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("overloaded"), "{}", r.text());
    assert!(!r.text().contains("[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn the_token_is_refreshed_before_it_expires() {
    let mut m = FakeConfig::named("metadata");
    m.gcp_token = Some(TOKEN.into());
    let metadata = FakeProvider::start(m).await.unwrap();
    // SAFETY: one test per process; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("GCE_METADATA_HOST", metadata.addr.to_string()) };
    let token = GcpToken::new(Source::from_env().unwrap());
    assert_eq!(token.authorization().await.unwrap(), format!("Bearer {TOKEN}"));
    // The fake's tokens live 3599 s; refresh happens REFRESH_BEFORE_EXPIRY before that.
    let fresh_for = Duration::from_secs(3599) - REFRESH_BEFORE_EXPIRY;
    tokio::time::advance(fresh_for - Duration::from_secs(1)).await;
    token.authorization().await.unwrap();
    assert_eq!(metadata.hits(), 1, "still fresh: served from the cache");
    tokio::time::advance(Duration::from_secs(2)).await;
    token.authorization().await.unwrap();
    assert_eq!(metadata.hits(), 2, "near expiry: fetched again");
}
