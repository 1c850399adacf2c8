//! Shutdown on tokio's paused clock: in-flight requests get the grace period to finish; what is
//! still in flight when it ends gets an error in its caller's protocol — a stream an error
//! event, a waiting request a 503 — never a connection cut without a word.

use serde_json::json;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn streams_and_requests_outliving_the_grace_period_end_with_an_error() {
    let fake = FakeProvider::start(FakeConfig::named("slow")).await.unwrap();
    let yaml = format!(
        "endpoints:
  long: {{ provider: openai_compatible, base_url: \"{0}\", model: m, headers: {{ x-fake-chunks: \"100\", x-fake-chunk-interval-ms: \"1000\" }} }}
  anthropic-long: {{ provider: anthropic, base_url: \"{1}\", model: m, auth: {{ kind: none }}, headers: {{ x-fake-chunks: \"100\", x-fake-chunk-interval-ms: \"1000\" }} }}
  late: {{ provider: openai_compatible, base_url: \"{0}\", model: m, headers: {{ x-fake-delay-ms: \"100000\" }} }}
features:
  stream: {{ hierarchy: [long], deadline_ms: 300000, attempt_timeout_ms: 300000 }}
  astream: {{ hierarchy: [anthropic-long], deadline_ms: 300000, attempt_timeout_ms: 300000 }}
  wait: {{ hierarchy: [late], deadline_ms: 300000, attempt_timeout_ms: 300000 }}
",
        fake.base_url(),
        fake.base_url().trim_end_matches("/v1"),
    );
    let mut sc = TestSidecar::start_with(&yaml, |o| o.grace = Duration::from_secs(5)).await.unwrap();
    let stop = sc.sidecar.shutdown_handle().unwrap();
    let client = TestClient::default();
    let post = |path: &str, body: serde_json::Value| {
        let (client, url) = (client.clone(), sc.url(path));
        tokio::spawn(async move { client.post_json(&url, &[], body.to_string()).await.unwrap() })
    };
    let openai = post(
        "/v1/chat/completions",
        json!({"model": "stream", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let anthropic = post(
        "/v1/messages",
        json!({"model": "astream", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let waiting =
        post("/v1/chat/completions", json!({"model": "wait", "messages": [{"role": "user", "content": "hi"}]}));
    // Three seconds in, everything is in flight; then the pod is told to stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = Instant::now();
    stop.send(()).unwrap();

    let openai = openai.await.unwrap();
    assert_eq!(openai.status, 200);
    let events = openai.sse_data();
    assert!(events.len() > 3, "tokens kept flowing during the grace period: {}", events.len());
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{last}");
    assert!(!openai.text().contains("[DONE]"), "an error, not a normal end");

    let anthropic = anthropic.await.unwrap();
    let text = anthropic.text();
    assert!(text.trim_end().ends_with(r#"}"#) && text.contains("event: error"), "{text}");
    assert!(text.contains("shutting down"), "{text}");

    let waiting = waiting.await.unwrap();
    assert_eq!(waiting.status, 503);
    assert_eq!(waiting.json()["error"]["code"], "shutting_down");
    assert_eq!(waiting.header("retry-after"), "1");
    let took = stopped.elapsed();
    assert!((Duration::from_secs(5)..Duration::from_secs(6)).contains(&took), "{took:?}");
}
