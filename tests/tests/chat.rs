//! End to end through real sockets: the OpenAI chat API on the sidecar, against fake upstreams.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar};

fn config(primary: &FakeProvider, backup: &FakeProvider) -> String {
    format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: primary-model }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: backup-model }}
features:
  chat: {{ hierarchy: [primary, backup] }}
  summarize: {{ hierarchy: [backup] }}
"#,
        primary.base_url(),
        backup.base_url()
    )
}

async fn setup() -> (FakeProvider, FakeProvider, TestSidecar, TestClient) {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let sidecar = TestSidecar::start(&config(&primary, &backup)).await.unwrap();
    (primary, backup, sidecar, TestClient::default())
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/openai/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn non_streaming_reply_comes_from_the_primary_with_explain_headers() {
    let (primary, _backup, sc, client) = setup().await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap().split('.').next(), Some("Hello from primary"));
    assert_eq!(r.header("x-spillway-endpoint"), "primary");
    assert_eq!(r.header("x-spillway-attempts"), "1");
    assert!(r.header("x-spillway-request-id").starts_with("req_"));
    // The upstream saw the endpoint's model, not the feature name.
    assert_eq!(primary.recorded()[0].body["model"], "primary-model");
}

#[tokio::test]
async fn full_fixture_request_passes_through_untouched_except_model() {
    let (primary, _backup, sc, client) = setup().await;
    let mut body = fixture("chat_request.json");
    body.as_object_mut().unwrap().retain(|k, _| !k.starts_with('_'));
    body["model"] = json!("chat");
    body["some_future_param"] = json!({"nested": [1, 2, 3]});
    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut seen = primary.recorded()[0].body.clone();
    assert_eq!(seen["model"], "primary-model");
    seen["model"] = json!("chat");
    assert_eq!(seen, body, "every other field, known or not, reaches the upstream as sent");
}

#[tokio::test]
async fn feature_header_wins_over_model() {
    let (primary, backup, sc, client) = setup().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = client
        .post_json(&sc.url("/v1/chat/completions"), &[("x-spillway-feature", "summarize")], body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-endpoint"), "backup");
    assert_eq!((primary.hits(), backup.hits()), (0, 1));
}

#[tokio::test]
async fn unknown_feature_is_a_404_naming_the_known_ones() {
    let (primary, backup, sc, client) = setup().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.clone()).await.unwrap();
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "unknown_feature");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("gpt-4o") && msg.contains("chat, summarize"), "{msg}");

    let r = client.post_json(&sc.url("/v1/chat/completions"), &[("x-spillway-feature", "nope")], body).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`nope`"));
    assert_eq!(primary.hits() + backup.hits(), 0);
}

#[tokio::test]
async fn streaming_forwards_every_event_and_usage() {
    let (_primary, _backup, sc, client) = setup().await;
    let body = json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    assert_eq!(r.header("x-spillway-endpoint"), "primary");
    let text = r.text();
    let datas: Vec<&str> =
        text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
    assert_eq!(datas.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = datas[..datas.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let content: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert!(content.starts_with("Hello from primary."), "{content}");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["total_tokens"].as_u64().unwrap() > 0, "usage chunk last: {usage}");
}

#[tokio::test]
async fn tool_calls_round_trip_streaming_and_not() {
    let (_primary, _backup, sc, client) = setup().await;
    let mut body = fixture("chat_request_tool_choice_forced.json");
    body.as_object_mut().unwrap().retain(|k, _| !k.starts_with('_'));
    body["model"] = json!("chat");
    let stream_options = body.as_object_mut().unwrap().remove("stream_options");
    body["stream"] = json!(false);
    let forced = body["tool_choice"]["function"]["name"].as_str().unwrap().to_owned();

    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], forced.as_str());
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object());

    body["stream"] = json!(true);
    body["stream_options"] = stream_options.unwrap_or(json!({"include_usage": true}));
    let r = client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    let mut arguments = String::new();
    let mut finish = None;
    for event in r.text().split("\n\n").filter(|e| e.starts_with("data: {")) {
        let c: Value = serde_json::from_str(&event[6..]).unwrap();
        if let Some(tc) = c["choices"][0]["delta"]["tool_calls"].get(0) {
            arguments.push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args, "fragments reassemble to the same call");
}

#[tokio::test]
async fn bad_input_gets_openai_errors_that_say_what_is_wrong() {
    let (primary, backup, sc, client) = setup().await;
    let url = sc.url("/v1/chat/completions");
    let json_ct = "application/json";
    let cases = [
        ("invalid json", json_ct, "{\"model\": \"chat\",".to_owned(), 400, "invalid_json"),
        ("missing messages", json_ct, json!({"model": "chat"}).to_string(), 400, "missing_messages"),
        ("empty messages", json_ct, json!({"model": "chat", "messages": []}).to_string(), 400, "empty_messages"),
        (
            "no model",
            json_ct,
            json!({"messages": [{"role": "user", "content": "x"}]}).to_string(),
            400,
            "missing_model",
        ),
        ("form post", "application/x-www-form-urlencoded", "model=chat".to_owned(), 415, "unsupported_content_type"),
    ];
    for (what, content_type, body, status, code) in cases {
        let req = http::Request::post(&url).header("content-type", content_type);
        let r = client.send(req.body(http_body_util::Full::new(body.into())).unwrap()).await.unwrap();
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["code"], code, "{what}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(primary.hits() + backup.hits(), 0, "nothing invalid reaches an upstream");
}

#[tokio::test]
async fn body_over_the_limit_is_a_413() {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let sc = TestSidecar::start_with(&config(&primary, &backup), |o| o.max_body_bytes = 1024).await.unwrap();
    let big = "x".repeat(2048);
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": big}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("1024"));
}

#[tokio::test]
async fn api_key_comes_from_the_endpoint_never_from_the_caller() {
    // SAFETY: set before any thread reads the environment in this test process (nextest runs
    // each test in its own process).
    unsafe { std::env::set_var("SPILLWAY_TEST_KEY", "sk-test-from-env") };
    let mut cfg = FakeConfig::named("secured");
    cfg.require_key = Some("sk-test-from-env".into());
    let fake = FakeProvider::start(cfg).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  secured:
    provider: openai_compatible
    base_url: "{}"
    model: m
    auth: {{ kind: api_key, env: SPILLWAY_TEST_KEY }}
    headers: {{ OpenAI-Project: proj_123 }}
features:
  chat: {{ hierarchy: [secured] }}
"#,
        fake.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default()
        .post_json(&sc.url("/v1/chat/completions"), &[("authorization", "Bearer caller-key")], body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &fake.recorded()[0].headers;
    assert_eq!(seen["authorization"], "Bearer sk-test-from-env");
    assert_eq!(seen["openai-project"], "proj_123");
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_metrics_and_features() {
    let (_p, _b, sc, client) = setup().await;
    assert_eq!(client.get(&sc.url("/healthz")).await.unwrap().status, 200);
    let ready = client.get(&sc.url("/readyz")).await.unwrap();
    assert_eq!(ready.json()["ready"], true);
    let models = client.get(&sc.url("/v1/models")).await.unwrap().json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat", "summarize"]);

    for stream in [false, true] {
        let body = json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        client.post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    }
    let metrics = client.get(&sc.url("/metrics")).await.unwrap().text();
    for needle in [
        r#"spillway_requests_total{feature="chat",outcome="ok"} 2"#,
        r#"spillway_attempts_total{feature="chat",endpoint="primary",outcome="ok"} 2"#,
        // A whole reply has no first token of its own: only the stream is a TTFT sample.
        r#"spillway_ttft_seconds_count{feature="chat",endpoint="primary"} 1"#,
        r#"spillway_request_duration_seconds_count{feature="chat",endpoint="primary",outcome="ok"} 2"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let r = client.get(&sc.url("/nope")).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_path");
}
