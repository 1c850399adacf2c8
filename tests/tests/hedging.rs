//! Hedging on tokio's paused clock: when a stream's first token is late the next tier is raced;
//! the first to produce a token wins and the other is cancelled; tool-result turns and
//! non-streaming requests are not hedged, and hedges are bounded by a share of requests in flight.

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider, Script};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};
use std::time::Duration;

async fn setup(primary_ttft_ms: u64, backup_ttft_ms: u64, hedge: &str) -> (FakeProvider, FakeProvider, TestSidecar) {
    let mut p = FakeConfig::named("primary");
    p.script = Script { ttft: Duration::from_millis(primary_ttft_ms), ..Script::default() };
    let mut b = FakeConfig::named("backup");
    b.script = Script { ttft: Duration::from_millis(backup_ttft_ms), ..Script::default() };
    let (primary, backup) = (FakeProvider::start(p).await.unwrap(), FakeProvider::start(b).await.unwrap());
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: p }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup], hedge_after_ttft_ms: {hedge} }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    (primary, backup, TestSidecar::start(&yaml).await.unwrap())
}

async fn ask(sc: &TestSidecar, messages: Value) -> Reply {
    let body = json!({"model": "chat", "stream": true, "messages": messages});
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

fn hello() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

async fn metrics(sc: &TestSidecar) -> String {
    TestClient::default().get(&sc.url("/metrics")).await.unwrap().text()
}

#[tokio::test(start_paused = true)]
async fn a_late_first_token_is_raced_and_the_faster_tier_wins() {
    let (primary, backup, sc) = setup(10_000, 100, "500").await;
    let started = tokio::time::Instant::now();
    let r = ask(&sc, hello()).await;
    assert_eq!(r.header("x-spillway-endpoint"), "backup");
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    assert!(!r.text().contains("Hello from primary"), "nothing of the loser reaches the client");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(2), "hedged at 500 ms: {took:?}");
    assert_eq!((primary.hits(), backup.hits()), (1, 1));
    let m = metrics(&sc).await;
    assert!(
        m.contains(r#"spillway_attempts_total{feature="chat",endpoint="backup",outcome="hedge_started"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"spillway_attempts_total{feature="chat",endpoint="primary",outcome="hedge_lost"} 1"#), "{m}");
}

#[tokio::test(start_paused = true)]
async fn the_primary_still_wins_if_its_token_comes_first() {
    let (_primary, _backup, sc) = setup(700, 2_000, "500").await;
    let r = ask(&sc, hello()).await;
    assert_eq!(r.header("x-spillway-endpoint"), "primary");
    let m = metrics(&sc).await;
    assert!(m.contains(r#"spillway_attempts_total{feature="chat",endpoint="backup",outcome="hedge_lost"} 1"#), "{m}");
}

#[tokio::test(start_paused = true)]
async fn tool_result_turns_are_not_hedged() {
    let (_primary, backup, sc) = setup(3_000, 100, "500").await;
    let turn = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"}
    ]);
    let r = ask(&sc, turn).await;
    assert_eq!(r.header("x-spillway-endpoint"), "primary");
    assert_eq!(backup.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_percentile_hedge_waits_until_it_knows_the_percentile() {
    let (_primary, backup, sc) = setup(1_000, 100, "p90").await;
    // Too few samples for a p90 yet: no hedging.
    for _ in 0..19 {
        assert_eq!(ask(&sc, hello()).await.header("x-spillway-endpoint"), "primary");
    }
    assert_eq!(backup.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_non_streaming_request_is_not_hedged() {
    // Its first byte is its whole answer: a race would double the work it saves.
    let (primary, backup, sc) = setup(1_500, 100, "500").await;
    let body = json!({"model": "chat", "messages": hello()});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "primary"), "{}", r.text());
    assert_eq!((primary.hits(), backup.hits()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn hedges_are_bounded_by_a_share_of_the_requests_in_flight() {
    // Ten streams at once into a primary whose first token takes 2 s, hedging at 100 ms: the
    // default `hedge_max_share` of 10 % lets one of them race; the other nine wait for the
    // primary rather than doubling the load at once.
    let (primary, backup, sc) = setup(2_000, 20, "100").await;
    let url = sc.url("/v1/chat/completions");
    let body = json!({"model": "chat", "stream": true, "messages": hello()}).to_string();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { TestClient::default().post_json(&url, &[], body).await.unwrap() })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let on_backup = replies.iter().filter(|r| r.header("x-spillway-endpoint") == "backup").count();
    assert!(replies.iter().all(|r| r.text().ends_with("data: [DONE]\n\n")));
    assert_eq!(on_backup, 1, "one hedge for ten requests in flight");
    assert_eq!((primary.hits(), backup.hits()), (10, 1));
}
