//! Fallback through a feature's hierarchy, and the failures that must not fall back.

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider, Script};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};

/// A sidecar whose feature `chat` tries `primary` (the fake, with `headers` sent to it) and
/// then `backup`.
async fn sidecar(primary_url: &str, primary_headers: &str, backup: &FakeProvider, extra: &str) -> TestSidecar {
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{primary_url}", model: p, headers: {{ {primary_headers} }}, connect_timeout_ms: 1000 }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup] {extra} }}
"#,
        backup.base_url()
    );
    TestSidecar::start(&yaml).await.unwrap()
}

async fn ask(sc: &TestSidecar, stream: bool) -> Reply {
    let body = json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

fn answered_by(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-spillway-endpoint").to_owned()
}

#[tokio::test]
async fn each_retryable_failure_before_the_first_byte_falls_back() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    for (what, headers) in [
        ("500", "x-fake-status: '500'"),
        ("503", "x-fake-status: '503'"),
        ("429", "x-fake-status: '429', x-fake-retry-after: '3'"),
        ("401 (endpoint's key)", "x-fake-status: '401'"),
        ("404 (endpoint's model)", "x-fake-status: '404'"),
        ("reset before headers", "x-fake-reset: '1'"),
    ] {
        let sc = sidecar(&primary.base_url(), headers, &backup, "").await;
        for stream in [false, true] {
            let r = ask(&sc, stream).await;
            assert_eq!(answered_by(&r), "backup", "{what}, stream={stream}");
            assert_eq!(r.header("x-spillway-attempts"), "2", "{what}");
            if stream {
                assert!(r.text().ends_with("data: [DONE]\n\n"), "{what}: {}", r.text());
            }
        }
    }
}

#[tokio::test]
async fn connection_refused_falls_back() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    // A port held by a socket that never listens: connecting is refused, and no other test
    // process can take the port while this one holds it.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = holder.local_addr().unwrap();
    let sc = sidecar(&format!("http://{dead}/v1"), "", &backup, "").await;
    let r = ask(&sc, false).await;
    assert_eq!(answered_by(&r), "backup");
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(r#"spillway_attempts_total{feature="chat",endpoint="primary",outcome="connect_error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_token_falls_back() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    // Both send the role chunk (no token yet), then cut the connection or send an error event.
    for headers in ["x-fake-drop-after: '0'", "x-fake-error-after: '0'"] {
        let sc = sidecar(&primary.base_url(), headers, &backup, "").await;
        let r = ask(&sc, true).await;
        assert_eq!(answered_by(&r), "backup", "{headers}");
        assert!(r.text().ends_with("data: [DONE]\n\n"), "{headers}: {}", r.text());
        assert!(!r.text().contains("Hello from primary"), "nothing of the failed attempt reaches the client");
    }
}

#[tokio::test(start_paused = true)]
async fn mid_stream_failure_ends_with_an_error_event_not_a_silent_truncation() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    // Chunks a second apart (paused time), so each is on the wire before the connection dies.
    let sc =
        sidecar(&primary.base_url(), "x-fake-drop-after: '2', x-fake-chunk-interval-ms: '1000'", &backup, "").await;
    let r = ask(&sc, true).await;
    assert_eq!(answered_by(&r), "primary");
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    // role chunk + 2 content chunks, then spillway's error event.
    assert_eq!(events.len(), 4, "{events:#?}");
    let err: Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "upstream_stream_failed");
    assert_eq!(backup.hits(), 0, "after the first byte, a stream never switches provider");
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(metrics.contains(r#"spillway_requests_total{feature="chat",outcome="reset"} 1"#), "{metrics}");
}

#[tokio::test]
async fn upstream_error_event_is_forwarded_as_is() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let sc = sidecar(&primary.base_url(), "x-fake-error-after: '1'", &backup, "").await;
    let r = ask(&sc, true).await;
    let last = r.text().trim_end().rsplit("\n\n").next().unwrap().to_owned();
    let fixture = std::fs::read_to_string(format!(
        "{}/fixtures/openai/chat_stream_midstream_error.sse",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(
        last,
        fixture.trim_end().rsplit("\n\n").next().unwrap(),
        "the provider's own error event, byte for byte"
    );
}

#[tokio::test]
async fn client_errors_are_returned_as_is_without_fallback() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let sc = sidecar(&primary.base_url(), "x-fake-status: '400'", &backup, "").await;
    let r = ask(&sc, false).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-spillway-endpoint"), "primary");
    assert_eq!(r.json()["error"]["code"], "invalid_value", "the upstream's own error body");
    assert_eq!(backup.hits(), 0);
}

#[tokio::test]
async fn when_every_endpoint_fails_the_error_names_each_one() {
    let mut cfg = FakeConfig::named("backup");
    cfg.script = Script { status: Some(502), ..Script::default() };
    let backup = FakeProvider::start(cfg).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let sc = sidecar(&primary.base_url(), "x-fake-status: '503'", &backup, "").await;
    let r = ask(&sc, true).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-spillway-attempts"), "2");
    let e = &r.json()["error"];
    assert_eq!(e["code"], "all_endpoints_failed");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("`primary`: HTTP 503") && msg.contains("`backup`: HTTP 502"), "{msg}");
}

#[tokio::test]
async fn when_every_endpoint_throttles_the_caller_gets_a_429_with_retry_after() {
    let mut cfg = FakeConfig::named("backup");
    cfg.script = Script { status: Some(429), retry_after: Some(7), ..Script::default() };
    let backup = FakeProvider::start(cfg).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let sc = sidecar(&primary.base_url(), "x-fake-status: '429', x-fake-retry-after: '2'", &backup, "").await;
    let r = ask(&sc, false).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "all_endpoints_throttled");
    assert_eq!(r.header("retry-after"), "2", "the soonest any endpoint will take traffic");
}

#[tokio::test(start_paused = true)]
async fn a_primary_slower_than_the_attempt_timeout_is_abandoned() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    // Head delayed 10 minutes; the attempt timeout is 5 s of (paused) time.
    let sc = sidecar(&primary.base_url(), "x-fake-delay-ms: '600000'", &backup, ", attempt_timeout_ms: 5000").await;
    let started = tokio::time::Instant::now();
    assert_eq!(answered_by(&ask(&sc, false).await), "backup");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(5) && waited < std::time::Duration::from_secs(60), "{waited:?}");

    // A slow first token (head on time, first event late) is the same failure for a stream.
    let sc = sidecar(&primary.base_url(), "x-fake-ttft-ms: '600000'", &backup, ", attempt_timeout_ms: 5000").await;
    assert_eq!(answered_by(&ask(&sc, true).await), "backup");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_all_attempts_and_the_stream() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    // Every attempt is slower than the whole deadline: a 504 naming the deadline.
    let sc = sidecar(&primary.base_url(), "x-fake-delay-ms: '600000'", &backup, ", deadline_ms: 20000").await;
    let r = ask(&sc, false).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("20000 ms"));

    // A committed stream that outlives the deadline ends with an error event.
    let sc = sidecar(
        &primary.base_url(),
        "x-fake-chunk-interval-ms: '15000', x-fake-chunks: '10'",
        &backup,
        ", deadline_ms: 20000",
    )
    .await;
    let r = ask(&sc, true).await;
    assert_eq!(answered_by(&r), "primary");
    let last = r.text().trim_end().rsplit("\n\n").next().unwrap().to_owned();
    let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "deadline_exceeded");
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_bounds_retries_at_failing_endpoints_never_fallback_to_a_healthy_one() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: p, headers: {{ x-fake-status: "503" }} }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [primary, backup] }}
retry_budget: {{ ratio: 0.0, min_per_s: 2, window_s: 1 }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    // A budget of two a second, and ten requests: the backup is healthy, so falling back to it
    // adds no load to anything failing and is never refused.
    for _ in 0..10 {
        assert_eq!(ask(&sc, false).await.status, 200);
    }
    assert_eq!(backup.hits(), 10);

    // Now the backup fails too. Its first failure was unforeseeable; after it, retries at it
    // are retries at a failing endpoint: two a second, then none.
    backup.set_script(Script { status: Some(502), ..Script::default() });
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    let before = backup.hits();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(ask(&sc, false).await.status.as_u16());
    }
    assert_eq!(statuses, [503; 6]);
    assert_eq!(backup.hits() - before, 3, "the unforeseeable first failure, then the budget's two");
    let r = ask(&sc, false).await;
    assert_eq!(r.header("x-spillway-attempts"), "1");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("retry budget"), "{}", r.text());
    assert_eq!(r.header("x-should-retry"), "false", "spillway tried what it could: no SDK retry storm");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    use http_body_util::BodyExt;
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let sc = sidecar(&primary.base_url(), "x-fake-chunks: '100', x-fake-chunk-interval-ms: '1000'", &backup, "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let body = json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let req = http::Request::post(sc.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(stream);
    drop(client);
    // The sidecar notices at its next write (the next chunk is due a second later, on paused
    // time) and drops the upstream request with it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(primary.aborted_streams(), 1, "the upstream stream was cut short, not read to its end");
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(metrics.contains(r#"spillway_requests_total{feature="chat",outcome="client_cancelled"} 1"#), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn embeddings_ask_the_retry_budget_before_a_failing_endpoint() {
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{}", model: e, dimensions: 8, headers: {{ x-fake-status: "503" }} }}
  backup:  {{ provider: openai_compatible, base_url: "{}", model: e, dimensions: 8 }}
features:
  embed: {{ hierarchy: [primary, backup] }}
retry_budget: {{ ratio: 0.0, min_per_s: 2, window_s: 1 }}
"#,
        primary.base_url(),
        backup.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let embed = || async {
        TestClient::default()
            .post_json(&sc.url("/v1/embeddings"), &[], json!({"model": "embed", "input": "hi"}).to_string())
            .await
            .unwrap()
    };
    // A healthy backup takes every fallback, budget or not.
    for _ in 0..6 {
        assert_eq!(embed().await.status, 200);
    }
    assert_eq!(backup.hits(), 6);
    // Once the backup fails as well, retries at it are retries at a failing endpoint.
    backup.set_script(Script { status: Some(502), ..Script::default() });
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    let before = backup.hits();
    for _ in 0..6 {
        assert_eq!(embed().await.status, 503);
    }
    assert_eq!(backup.hits() - before, 3, "the unforeseeable first failure, then the budget's two");
    let r = embed().await;
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("retry budget"), "{}", r.text());
}
