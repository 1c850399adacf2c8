//! Whose failure is it? A request one endpoint cannot carry, or an endpoint with no credential,
//! moves the request on to the next tier — and neither counts against the endpoint's health nor
//! takes down features that never use it.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use aws_credential_types::Credentials;
use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};

async fn chat(sc: &TestSidecar, feature: &str, content: Value) -> Reply {
    let body = json!({"model": feature, "max_tokens": 64, "messages": [{"role": "user", "content": content}]});
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

async fn endpoint_state(sc: &TestSidecar, endpoint: &str) -> Value {
    let v = TestClient::default().get(&sc.url("/debug/endpoints")).await.unwrap().json();
    v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == endpoint).unwrap()["state"].clone()
}

#[tokio::test(start_paused = true)]
async fn an_image_url_converse_cannot_carry_goes_to_the_next_tier_without_tripping_converse() {
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    // SAFETY: set before the sidecar (and any other thread) reads the environment; nextest
    // runs each test in its own process.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", AKID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::remove_var("AWS_SESSION_TOKEN");
    }
    let mut cfg = FakeConfig::named("bedrock");
    cfg.aws = Some((Credentials::new(AKID, SECRET, None, None, "test"), "us-east-1".into()));
    let bedrock = FakeProvider::start(cfg).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  converse: {{ provider: bedrock, region: us-east-1, base_url: "http://{}", model: "us.anthropic.claude-3-5-haiku-20241022-v1:0" }}
  backup:   {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat: {{ hierarchy: [converse, backup], breaker: strict }}
breakers:
  strict: {{ window_s: 30, min_requests: 3, error_rate: 0.3, consecutive_failures: 2, open_for_s: 30 }}
"#,
        bedrock.addr,
        backup.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let picture = json!([
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]);
    for _ in 0..6 {
        let r = chat(&sc, "chat", picture.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-spillway-endpoint"), "backup");
    }
    assert_eq!(bedrock.hits(), 0, "nothing Converse could not carry was sent to it");
    assert_eq!(endpoint_state(&sc, "converse").await, "closed", "six such requests are not six failures");

    // Text Converse can carry still goes to it first.
    let r = chat(&sc, "chat", json!("hi")).await;
    assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "converse"), "{}", r.text());
    assert_eq!(bedrock.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_key_is_unset_is_skipped_and_reported_while_the_pod_serves() {
    const UNSET: &str = "SPILLWAY_TEST_KEY_NOBODY_SET";
    // SAFETY: as above; this test's process is its own.
    unsafe { std::env::remove_var(UNSET) };
    let keyed = FakeProvider::start(FakeConfig::named("keyed")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  keyed:  {{ provider: openai, base_url: "{}", model: gpt-4o, auth: {{ kind: api_key, env: {UNSET} }} }}
  backup: {{ provider: openai_compatible, base_url: "{}", model: b }}
features:
  chat:   {{ hierarchy: [keyed, backup] }}
  only:   {{ hierarchy: [keyed] }}
  other:  {{ hierarchy: [backup] }}
"#,
        keyed.base_url(),
        backup.base_url()
    );
    // The file is accepted: one missing key does not refuse the whole config.
    let sc = TestSidecar::start(&yaml).await.unwrap();

    let ready = TestClient::default().get(&sc.url("/readyz")).await.unwrap();
    assert_eq!(ready.status, 200, "the pod stays ready for every other feature: {}", ready.text());
    let unavailable = ready.json()["unavailable_endpoints"].clone();
    assert_eq!(unavailable[0]["endpoint"], "keyed", "{unavailable}");
    assert!(unavailable[0]["reason"].as_str().unwrap().contains(UNSET), "{unavailable}");

    for feature in ["chat", "other"] {
        let r = chat(&sc, feature, json!("hi")).await;
        assert_eq!((r.status.as_u16(), r.header("x-spillway-endpoint")), (200, "backup"), "{feature}: {}", r.text());
    }
    assert_eq!(keyed.hits(), 0, "nothing was sent unsigned");

    // A feature with nowhere else to go is told why, in its own API's error format.
    let r = chat(&sc, "only", json!("hi")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("keyed") && message.contains("no credentials") && message.contains(UNSET), "{message}");
    assert_eq!(r.header("x-should-retry"), "false", "retrying cannot conjure a key");

    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    let needle = r#"spillway_endpoint_credentials_missing{endpoint="keyed"} 1"#;
    assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
}
