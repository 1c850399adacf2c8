//! Upstreams that try to make the sidecar buffer without end: an SSE line that never ends, a
//! flood of keep-alives and never a token, an AWS event-stream frame announcing 4 GiB. Each is
//! cut at the frame cap (`--max-upstream-frame-bytes`, 64 KiB here) and is an upstream failure
//! like any other: before the first token the request falls back, after it the client's stream
//! ends with an error event in its own protocol. The hostile body is dropped, so the upstream
//! connection — and the memory it was growing — is released. A non-streaming reply is one frame:
//! one larger than the cap, or one whose body stalls past the attempt timeout, falls back too.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use aws_credential_types::Credentials;
use serde_json::json;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};

const CAP: usize = 64 * 1024;

async fn setup() -> (FakeProvider, FakeProvider, TestSidecar) {
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "hostile-upstream-test-secret";
    // SAFETY: set before the sidecar (and any other thread) reads the environment; nextest
    // runs each test in its own process.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", AKID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::remove_var("AWS_SESSION_TOKEN");
    }
    let mut cfg = FakeConfig::named("hostile");
    cfg.aws = Some((Credentials::new(AKID, SECRET, None, None, "test"), "us-east-1".into()));
    let hostile = FakeProvider::start(cfg).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let (h, b) = (hostile.addr, backup.base_url());
    let yaml = format!(
        r#"
endpoints:
  endless-first:  {{ provider: openai_compatible, base_url: "http://{h}/v1", model: m, headers: {{ x-fake-hostile: "endless-line:0" }} }}
  endless-later:  {{ provider: openai_compatible, base_url: "http://{h}/v1", model: m, headers: {{ x-fake-hostile: "endless-line:2" }} }}
  keep-alives:    {{ provider: openai_compatible, base_url: "http://{h}/v1", model: m, headers: {{ x-fake-hostile: "keep-alives" }} }}
  huge-frame:     {{ provider: bedrock, region: us-east-1, base_url: "http://{h}", model: m, headers: {{ x-fake-hostile: "huge-frame" }} }}
  stalled:        {{ provider: openai_compatible, base_url: "http://{h}/v1", model: m, headers: {{ x-fake-hostile: "stalled-body" }} }}
  enormous:       {{ provider: openai_compatible, base_url: "http://{h}/v1", model: m, headers: {{ x-fake-chunks: "20000" }} }}
  backup:         {{ provider: openai_compatible, base_url: "{b}", model: b }}
features:
  stalled:       {{ hierarchy: [stalled, backup], attempt_timeout_ms: 2000 }}
  enormous:      {{ hierarchy: [enormous, backup] }}
  endless-first: {{ hierarchy: [endless-first, backup] }}
  endless-later: {{ hierarchy: [endless-later, backup] }}
  keep-alives:   {{ hierarchy: [keep-alives, backup] }}
  huge-frame:    {{ hierarchy: [huge-frame, backup] }}
"#
    );
    let sc = TestSidecar::start_with(&yaml, |o| o.max_upstream_frame_bytes = CAP).await.unwrap();
    (hostile, backup, sc)
}

async fn openai_stream(sc: &TestSidecar, feature: &str) -> Reply {
    let body = json!({"model": feature, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn before_the_first_token_an_unframeable_stream_falls_back() {
    let (hostile, backup, sc) = setup().await;
    for feature in ["endless-first", "keep-alives", "huge-frame"] {
        let r = openai_stream(&sc, feature).await;
        assert_eq!(r.status.as_u16(), 200, "{feature}: {}", r.text());
        assert_eq!(r.header("x-spillway-endpoint"), "backup", "{feature}");
        assert!(r.text().ends_with("data: [DONE]\n\n"), "{feature}: {}", r.text());
        assert!(r.text().contains("Hello from backup."), "{feature}");
    }
    assert_eq!(hostile.aborted_streams(), 3, "each hostile body was dropped, not read on");
    assert_eq!(backup.hits(), 3);
}

#[tokio::test(start_paused = true)]
async fn after_the_first_token_it_ends_the_stream_with_an_error_event_in_the_callers_protocol() {
    let (hostile, _backup, sc) = setup().await;
    // Passed through (OpenAI to OpenAI): two chunks, then a line that never ends.
    let r = openai_stream(&sc, "endless-later").await;
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "endless-later"));
    let events = r.sse_data();
    let error = &events.last().unwrap()["error"];
    assert_eq!(error["code"], "upstream_stream_corrupt", "{events:?}");
    assert!(error["message"].as_str().unwrap().contains("longer than 65536 bytes"), "{error}");
    assert!(!r.text().contains("junk"), "no torn event reaches the client");

    // Translated (Anthropic client, OpenAI endpoint): the error is an Anthropic `error` event.
    let body = json!({"model": "endless-later", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/messages"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("event: content_block_delta"), "{text}");
    assert!(text.trim_end().rsplit("\n\n").next().unwrap().starts_with("event: error"), "{text}");
    assert_eq!(hostile.aborted_streams(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_non_streaming_reply_too_long_or_stalled_after_its_head_falls_back() {
    let (_hostile, backup, sc) = setup().await;
    let ask = |feature: &'static str| {
        let url = sc.url("/v1/chat/completions");
        async move {
            let body = json!({"model": feature, "messages": [{"role": "user", "content": "hi"}]});
            TestClient::default().post_json(&url, &[], body.to_string()).await.unwrap()
        }
    };
    // 20,000 words: a reply over the 64 KiB cap is not held; the backup answers.
    let r = ask("enormous").await;
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "backup"), "{}", r.text());

    // Head and half a body, then nothing: the 2 s attempt timeout covers the body too, so the
    // request moves on at 2 s rather than waiting out the 60 s deadline.
    let started = tokio::time::Instant::now();
    let r = ask("stalled").await;
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "backup"), "{}", r.text());
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(3), "{took:?}");
    assert_eq!(backup.hits(), 2);
}
