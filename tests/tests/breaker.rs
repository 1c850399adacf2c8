//! Circuit breakers through the sidecar on tokio's paused clock: a failing primary is opened and
//! skipped, the debug view and metrics explain why, and once it heals it gets its traffic back
//! step by step through the PARTIAL-OPEN ramp, not all at once.

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider, Script};
use spillway_tests::harness::{TestClient, TestSidecar};
use std::time::Duration;

async fn setup() -> (FakeProvider, FakeProvider, TestSidecar) {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: p }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup], breaker: strict }}
breakers:
  strict:
    window_s: 30
    min_requests: 5
    error_rate: 0.5
    open_for_s: 30
    ramp: {{ start: 0.125, factor: 2, step_s: 10, max_s: 300 }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    (primary, backup, TestSidecar::start(&yaml).await.unwrap())
}

/// Sends `n` requests; returns how many the primary answered.
async fn send(sc: &TestSidecar, n: usize) -> usize {
    let mut by_primary = 0;
    for _ in 0..n {
        let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
        let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        by_primary += usize::from(r.header("x-spillway-endpoint") == "primary");
    }
    by_primary
}

async fn debug(sc: &TestSidecar, endpoint: &str) -> Value {
    let v = TestClient::default().get(&sc.url("/debug/endpoints")).await.unwrap().json();
    v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == endpoint).unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_is_opened_skipped_and_ramped_back_after_it_heals() {
    let (primary, backup, sc) = setup().await;
    assert_eq!(send(&sc, 10).await, 10, "healthy primary takes everything");

    // The healthy requests slide out of the 30 s window; then the primary starts failing.
    tokio::time::advance(Duration::from_secs(31)).await;
    primary.set_script(Script { status: Some(503), ..Script::default() });
    let hits = primary.hits();
    assert_eq!(send(&sc, 10).await, 0, "every request falls back to the backup");
    assert_eq!(primary.hits() - hits, 5, "opened at min_requests failures; later requests skip the primary");
    let d = debug(&sc, "primary").await;
    assert_eq!(d["state"], "open", "{d}");
    assert_eq!(d["reason"], "error_rate");

    // While OPEN the primary gets nothing and requests take one attempt.
    let before = primary.hits();
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!((r.header("x-spillway-endpoint"), r.header("x-spillway-attempts")), ("backup", "1"));
    assert_eq!(primary.hits(), before);

    // It heals; after open_for_s the ramp gives it 12.5 %, 25 %, 50 % of requests, then all.
    primary.set_script(Script::default());
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut shares = Vec::new();
    for _ in 0..4 {
        shares.push(send(&sc, 16).await);
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    assert_eq!(shares, [2, 4, 8, 16], "three ramp steps, no cliff");
    assert_eq!(debug(&sc, "primary").await["state"], "closed");
    assert!(backup.hits() > 0);

    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    for needle in [
        r#"spillway_breaker_transitions_total{endpoint="primary",from="closed",to="open"} 1"#,
        r#"spillway_breaker_transitions_total{endpoint="primary",from="open",to="partial_open"} 1"#,
        r#"spillway_breaker_transitions_total{endpoint="primary",from="partial_open",to="closed"} 1"#,
        r#"spillway_breaker_state{endpoint="primary",state="closed"} 1"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}

#[tokio::test(start_paused = true)]
async fn when_every_endpoint_is_open_each_is_still_tried_as_a_last_resort() {
    let (primary, backup, sc) = setup().await;
    primary.set_script(Script { status: Some(503), ..Script::default() });
    backup.set_script(Script { status: Some(503), ..Script::default() });
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..6 {
        TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    }
    assert_eq!(debug(&sc, "primary").await["state"], "open");
    assert_eq!(debug(&sc, "backup").await["state"], "open");
    // The backup heals while both breakers are still open: the request is not failed untried.
    backup.set_script(Script::default());
    let (p, b) = (primary.hits(), backup.hits());
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-spillway-endpoint"), "backup");
    assert_eq!(backup.hits(), b + 1);
    assert!(primary.hits() <= p + 1, "each endpoint at most once");
}

#[tokio::test(start_paused = true)]
async fn a_primary_whose_first_token_turns_slow_loses_its_traffic_then_ramps_back() {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: p }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup], breaker: interactive, attempt_timeout_ms: 2000 }}
breakers:
  interactive:
    window_s: 30
    min_requests: 5
    error_rate: 0.2
    slow_ttft: {{ over_ms: 1500, rate: 0.1 }}
    open_for_s: 30
    ramp: {{ start: 0.125, factor: 2, step_s: 10, max_s: 300 }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    // 200 OK, but the first token takes 2.5 s.
    primary.set_script(Script { ttft: Duration::from_millis(2500), ..Script::default() });
    let started = tokio::time::Instant::now();
    let mut by_primary = 0;
    let mut streamed = 0;
    for _ in 0..40 {
        let body = json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
        assert!(r.text().ends_with("data: [DONE]\n\n"), "every stream completes: {}", r.text());
        by_primary += usize::from(r.header("x-spillway-endpoint") == "primary");
        streamed += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "all within one window: {:?}", started.elapsed());
    assert_eq!((by_primary, streamed), (0, 40), "the slow primary answered nothing; the backup everything");
    let d = debug(&sc, "primary").await;
    assert_eq!((d["state"].as_str(), d["reason"].as_str()), (Some("open"), Some("slow_first_token")), "{d}");
    assert!(primary.hits() <= 5, "after min_requests slow attempts the primary is skipped ({})", primary.hits());

    // It heals; the ramp hands its traffic back in steps.
    primary.set_script(Script::default());
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut shares = Vec::new();
    for _ in 0..4 {
        shares.push(send(&sc, 16).await);
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    assert_eq!(shares, [2, 4, 8, 16], "three ramp steps, no cliff");
}

/// Two fakes behind `chat: [primary, backup]` with the given breaker policy body and feature
/// settings.
async fn pair(breaker: &str, feature_extra: &str) -> (FakeProvider, FakeProvider, TestSidecar) {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: p }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup], breaker: b{feature_extra} }}
breakers:
  b:
{breaker}
"#,
        primary.base_url(),
        backup.base_url()
    );
    (primary, backup, TestSidecar::start(&yaml).await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_long_answer_is_not_slow_but_a_crawling_one_trips_slow_tpot() {
    let policy = "    window_s: 60\n    min_requests: 5\n    error_rate: 0.5\n    slow_tpot: { over_ms: 100, rate: 0.5 }\n    open_for_s: 30";
    let (primary, _backup, sc) = pair(policy, "").await;
    // 200 tokens at 10 ms each: a 2 s answer, 10 ms per token.
    primary.set_script(Script {
        ttft: Duration::from_millis(20),
        chunks: 200,
        chunk_interval: Duration::from_millis(10),
        ..Script::default()
    });
    assert_eq!(send(&sc, 10).await, 10, "long but brisk answers keep the primary");
    assert_eq!(debug(&sc, "primary").await["state"], "closed");

    // 10 tokens at 400 ms each: shorter, but crawling.
    primary.set_script(Script {
        ttft: Duration::from_millis(20),
        chunks: 10,
        chunk_interval: Duration::from_millis(400),
        ..Script::default()
    });
    let before = primary.hits();
    let by_primary = send(&sc, 12).await;
    let d = debug(&sc, "primary").await;
    assert_eq!((d["state"].as_str(), d["reason"].as_str()), (Some("open"), Some("slow_tpot")), "{d}");
    assert!(by_primary < 12 && primary.hits() - before == by_primary as u64, "then the backup takes over");
}

#[tokio::test(start_paused = true)]
async fn a_recovery_probe_into_a_still_slow_endpoint_costs_the_slow_mark_not_the_timeout() {
    let policy = "    window_s: 30\n    min_requests: 5\n    error_rate: 0.5\n    slow_ttft: { over_ms: 1000, rate: 0.2 }\n    open_for_s: 5\n    ramp: { start: 0.5, factor: 2, step_s: 10, max_s: 300 }";
    let (primary, backup, sc) = pair(policy, ", attempt_timeout_ms: 8000").await;
    // The primary's first token takes 3 s: slow, but well inside the attempt timeout.
    primary.set_script(Script { ttft: Duration::from_secs(3), ..Script::default() });
    let stream = |sc: &TestSidecar| {
        let body = json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let url = sc.url("/v1/chat/completions");
        async move { TestClient::default().post_json(&url, &[], body.to_string()).await.unwrap() }
    };
    for _ in 0..8 {
        stream(&sc).await;
    }
    let d = debug(&sc, "primary").await;
    assert_eq!((d["state"].as_str(), d["reason"].as_str()), (Some("open"), Some("slow_first_token")), "{d}");

    // After open_for_s it probes half the traffic, but the primary is still slow: each probe is
    // given up at the 1 s slow mark and the request goes on to the backup.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(debug(&sc, "primary").await["state"], "partial_open");
    let (p, b) = (primary.hits(), backup.hits());
    let mut worst = Duration::ZERO;
    for _ in 0..4 {
        let started = tokio::time::Instant::now();
        let r = stream(&sc).await;
        assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
        assert_eq!(r.header("x-spillway-endpoint"), "backup");
        worst = worst.max(started.elapsed());
    }
    assert!(primary.hits() > p, "the primary was probed");
    assert_eq!(backup.hits() - b, 4);
    assert!(worst < Duration::from_millis(1500), "a probe cost {worst:?}, not the 3 s answer or the 8 s timeout");
    assert_ne!(debug(&sc, "primary").await["state"], "closed", "a slow probe does not close the breaker");
}
