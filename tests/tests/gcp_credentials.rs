//! Google credentials against fake token services: a service-account key signs an RS256 JWT
//! that the fake verifies; workload identity federation exchanges a subject token at STS and
//! impersonates a service account; each token is cached and refreshed before expiry on tokio's
//! paused clock; and a Vertex request through the sidecar carries the resulting token.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use serde_json::json;
use spillway_dataplane::upstream::gcp::{GcpToken, REFRESH_BEFORE_EXPIRY, Source};
use spillway_tests::fake::cloud::{self, CloudConfig, CloudFake};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar};
use std::time::Duration;

const LIFETIME: Duration = Duration::from_secs(3600);
const PRIVATE: &str = include_str!("../fixtures/credentials/test_service_account_key.pem");
const PUBLIC: &str = include_str!("../fixtures/credentials/test_service_account_key.pub.pem");

async fn cloud() -> CloudFake {
    CloudFake::start(CloudConfig {
        lifetime: LIFETIME,
        web_identity_token: None,
        container_token: None,
        gcp_public_key: Some(PUBLIC.into()),
        gcp_subject_token: Some("k8s-projected-jwt".into()),
    })
    .await
    .unwrap()
}

fn service_account_file(dir: &std::path::Path, fake: &CloudFake, key: &str) -> std::path::PathBuf {
    // The shape of the reference fixture, with a real (throwaway) key and the fake's token URI.
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/credentials/gcp_service_account_key.json")).unwrap();
    v["private_key"] = key.into();
    v["token_uri"] = format!("{}/token", fake.url()).into();
    let path = dir.join("sa.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

fn external_account_file(dir: &std::path::Path, fake: &CloudFake, impersonate: bool) -> std::path::PathBuf {
    let subject = dir.join("subject-token");
    std::fs::write(&subject, "k8s-projected-jwt\n").unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/credentials/gcp_external_account.json")).unwrap();
    v["token_url"] = format!("{}/v1/token", fake.url()).into();
    v["credential_source"] = json!({"file": subject, "format": {"type": "text"}});
    if impersonate {
        v["service_account_impersonation_url"] = format!(
            "{}/v1/projects/-/serviceAccounts/spillway@my-project.iam.gserviceaccount.com:generateAccessToken",
            fake.url()
        )
        .into();
    } else {
        v.as_object_mut().unwrap().remove("service_account_impersonation_url");
    }
    let path = dir.join("external.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

async fn assert_cached_then_refreshed(token: &GcpToken, expected: &str, calls: impl Fn() -> u64) {
    assert_eq!(token.authorization().await.unwrap(), format!("Bearer {expected}"));
    assert_eq!(calls(), 1);
    tokio::time::advance(LIFETIME - REFRESH_BEFORE_EXPIRY - Duration::from_secs(60)).await;
    token.authorization().await.unwrap();
    assert_eq!(calls(), 1, "a fresh token comes from the cache");
    tokio::time::advance(Duration::from_secs(120)).await;
    token.authorization().await.unwrap();
    assert_eq!(calls(), 2, "refreshed before it expires");
}

#[tokio::test(start_paused = true)]
async fn service_account_key_signs_a_jwt_the_token_endpoint_verifies() {
    let fake = cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let token = GcpToken::new(Source::from_file(&service_account_file(dir.path(), &fake, PRIVATE)).unwrap());
    assert_cached_then_refreshed(&token, cloud::GCP_SA_TOKEN, || fake.calls("gcp-token")).await;
}

#[tokio::test]
async fn a_key_the_endpoint_does_not_know_is_refused_with_the_oauth_error() {
    let fake = cloud().await;
    let dir = tempfile::tempdir().unwrap();
    // Another valid RSA key: signs fine, verifies nowhere.
    let other = include_str!("../fixtures/credentials/test_unregistered_key.pem");
    let token = GcpToken::new(Source::from_file(&service_account_file(dir.path(), &fake, other)).unwrap());
    let err = token.authorization().await.unwrap_err();
    assert!(err.contains("Invalid JWT Signature"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "no key material in errors: {err}");
}

#[tokio::test(start_paused = true)]
async fn external_account_exchanges_then_impersonates() {
    let fake = cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let token = GcpToken::new(Source::from_file(&external_account_file(dir.path(), &fake, true)).unwrap());
    assert_cached_then_refreshed(&token, cloud::GCP_IMPERSONATED_TOKEN, || fake.calls("gcp-impersonate")).await;
    assert_eq!(fake.calls("gcp-sts"), 2, "every refresh exchanges a freshly read subject token");

    let plain = GcpToken::new(Source::from_file(&external_account_file(dir.path(), &fake, false)).unwrap());
    assert_eq!(plain.authorization().await.unwrap(), format!("Bearer {}", cloud::GCP_FEDERATED_TOKEN));
}

#[tokio::test]
async fn vertex_requests_carry_the_service_account_token() {
    let fake = cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake, PRIVATE);
    // SAFETY: one test per process; set before the sidecar reads the environment.
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &sa) };
    let mut v = FakeConfig::named("vertex");
    v.gcp_token = Some(cloud::GCP_SA_TOKEN.into());
    let vertex = FakeProvider::start(v).await.unwrap();
    let yaml = format!(
        "endpoints:\n  g: {{ provider: vertex, region: europe-west4, project: p, base_url: \"http://{}\", model: gemini-2.0-flash-001 }}\nfeatures:\n  f: {{ hierarchy: [g] }}\n",
        vertex.addr
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    for _ in 0..3 {
        let body = json!({"model": "f", "messages": [{"role": "user", "content": "hi"}]});
        let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(fake.calls("gcp-token"), 1, "one token serves every request");
}
