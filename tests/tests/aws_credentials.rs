//! The AWS credential chain against fake STS, container and IMDS endpoints: each source loads,
//! is cached, and is refreshed before expiry on tokio's paused clock; web identity re-reads its
//! rotating token file; and a Bedrock request through the sidecar is signed with what STS issued.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use aws_credential_types::Credentials;
use serde_json::json;
use spillway_dataplane::upstream::aws::credentials::{AwsCredentials, REFRESH_BEFORE_EXPIRY, Source};
use spillway_tests::fake::cloud::{self, CloudConfig, CloudFake};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar};
use std::time::Duration;

const LIFETIME: Duration = Duration::from_secs(3600);

fn set(vars: &[(&str, &str)]) {
    for (k, v) in vars {
        // SAFETY: nextest runs each test in its own process, and this runs before anything
        // else reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
}

async fn cloud(web_identity_token: Option<&str>) -> CloudFake {
    CloudFake::start(CloudConfig {
        lifetime: LIFETIME,
        web_identity_token: web_identity_token.map(str::to_owned),
        container_token: Some("pod-identity-token".into()),
        gcp_public_key: None,
        gcp_subject_token: None,
    })
    .await
    .unwrap()
}

/// Loads, reuses while fresh, reloads once within REFRESH_BEFORE_EXPIRY of expiry.
async fn assert_cached_then_refreshed(creds: &AwsCredentials, calls: impl Fn() -> u64) {
    let c = creds.get().await.unwrap();
    assert_eq!((c.access_key_id(), c.session_token()), (cloud::ACCESS_KEY_ID, Some(cloud::SESSION_TOKEN)));
    assert_eq!(calls(), 1);
    tokio::time::advance(LIFETIME - REFRESH_BEFORE_EXPIRY - Duration::from_secs(60)).await;
    creds.get().await.unwrap();
    assert_eq!(calls(), 1, "fresh credentials come from the cache");
    tokio::time::advance(Duration::from_secs(120)).await;
    creds.get().await.unwrap();
    assert_eq!(calls(), 2, "refreshed before they expire");
}

#[tokio::test(start_paused = true)]
async fn web_identity_assumes_the_role_and_rereads_the_rotated_token() {
    let fake = cloud(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "jwt-one").unwrap();
    set(&[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/spillway"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ENDPOINT_URL_STS", &fake.url()),
    ]);
    let creds = AwsCredentials::new(Source::from_env().unwrap());
    creds.get().await.unwrap();
    std::fs::write(&token_file, "jwt-two").unwrap();
    tokio::time::advance(LIFETIME).await;
    creds.get().await.unwrap();
    assert_eq!(
        fake.web_identity_tokens(),
        ["jwt-one", "jwt-two"],
        "kubelet rotates the token; every refresh re-reads it"
    );

    let creds = AwsCredentials::new(Source::from_env().unwrap());
    assert_cached_then_refreshed(&creds, || fake.calls("sts") - 2).await;
}

#[tokio::test]
async fn a_rejected_web_identity_token_is_reported_with_the_sts_code() {
    let fake = cloud(Some("the-right-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-wrong-token").unwrap();
    set(&[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/spillway"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ENDPOINT_URL_STS", &fake.url()),
    ]);
    let err = AwsCredentials::new(Source::from_env().unwrap()).get().await.unwrap_err();
    assert!(err.contains("InvalidIdentityToken"), "{err}");
    assert!(!err.contains("a-wrong-token"), "the token itself is never echoed: {err}");
}

#[tokio::test(start_paused = true)]
async fn container_credentials_send_the_pod_identity_token() {
    let fake = cloud(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token\n").unwrap();
    set(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &format!("{}/v1/credentials", fake.url())),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.to_str().unwrap()),
    ]);
    let creds = AwsCredentials::new(Source::from_env().unwrap());
    assert_cached_then_refreshed(&creds, || fake.calls("container")).await;
}

#[tokio::test(start_paused = true)]
async fn imds_v2_uses_a_session_token_then_the_role_credentials() {
    let fake = cloud(None).await;
    set(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &fake.url())]);
    let creds = AwsCredentials::new(Source::from_env().unwrap());
    assert_cached_then_refreshed(&creds, || fake.calls("imds-credentials")).await;
    assert_eq!(fake.calls("imds-token"), 2, "a session token per refresh");
    assert_eq!(fake.calls("imds-role"), 2);
}

#[tokio::test]
async fn imds_can_be_disabled() {
    set(&[("AWS_EC2_METADATA_DISABLED", "true")]);
    let err = Source::from_env().unwrap_err();
    assert!(err.contains("IMDS is disabled"), "{err}");
}

#[tokio::test]
async fn bedrock_requests_are_signed_with_web_identity_credentials() {
    let fake = cloud(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "jwt").unwrap();
    set(&[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/spillway"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ENDPOINT_URL_STS", &fake.url()),
    ]);
    let mut cfg = FakeConfig::named("bedrock");
    let issued =
        Credentials::new(cloud::ACCESS_KEY_ID, cloud::SECRET_ACCESS_KEY, Some(cloud::SESSION_TOKEN.into()), None, "t");
    cfg.aws = Some((issued, "eu-west-1".into()));
    let bedrock = FakeProvider::start(cfg).await.unwrap();
    let yaml = format!(
        "endpoints:\n  br: {{ provider: bedrock, region: eu-west-1, base_url: \"http://{}\", model: m }}\nfeatures:\n  f: {{ hierarchy: [br] }}\n",
        bedrock.addr
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    for _ in 0..3 {
        let body = json!({"model": "f", "messages": [{"role": "user", "content": "hi"}]});
        let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(fake.calls("sts"), 1, "credentials are shared across requests");
    let auth = bedrock.recorded()[0].headers["authorization"].to_str().unwrap().to_owned();
    assert!(auth.contains(&format!("Credential={}/", cloud::ACCESS_KEY_ID)), "{auth}");
}
