//! Drives the sidecar with the official Python SDKs: `openai` (python/test_openai_sdk.py) and
//! `anthropic` (python/test_anthropic_sdk.py), against every provider: OpenAI-compatible,
//! Azure OpenAI, Anthropic, Bedrock (Converse and InvokeModel, SigV4-verified) and Vertex AI
//! (Gemini and Claude). The venv comes from tests/python/setup.sh, which
//! the README's test command runs first.

// These tests hand the credential chains their settings through the process environment,
// as a pod would; nextest runs each test in its own process, before any other thread reads it.
#![allow(unsafe_code, clippy::disallowed_methods)]

use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::TestSidecar;
use std::path::PathBuf;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SPILLWAY_PYTHON") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("SPILLWAY_VENV").map_or_else(|| root.join("target/sdk-venv"), PathBuf::from);
    let p = venv.join("bin/python");
    assert!(p.exists(), "{} is missing: run `bash tests/python/setup.sh` (the README test command does)", p.display());
    p
}

/// Starts two fakes and a sidecar with the features both SDK suites use, then runs `script`.
async fn run_pytest(script: &str) {
    // Bedrock requests are signed with these and verified by the fake; Vertex tokens come from
    // the fake's metadata-server path.
    let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "sdk-test-secret", None, None, "test");
    let mut cfg = FakeConfig::named("primary");
    cfg.aws = Some((creds, "us-east-1".into()));
    cfg.gcp_token = Some("ya29.sdk-test".into());
    let primary = FakeProvider::start(cfg).await.unwrap();
    // SAFETY: set before the sidecar (or any other thread) reads the environment; nextest runs
    // each test in its own process.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "sdk-test-secret");
        std::env::set_var("GCE_METADATA_HOST", primary.addr.to_string());
    }
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let (p, b) = (primary.addr, backup.addr);
    let yaml = format!(
        r#"
endpoints:
  primary:  {{ provider: openai_compatible, base_url: "http://{p}/v1", model: gpt-fake }}
  claude:   {{ provider: anthropic, base_url: "http://{p}", model: claude-fake, auth: {{ kind: none }} }}
  broken:   {{ provider: openai_compatible, base_url: "http://{p}/v1", model: gpt-fake, headers: {{ x-fake-status: "503" }} }}
  claude-overloaded: {{ provider: anthropic, base_url: "http://{p}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-status: "529" }} }}
  backup:   {{ provider: openai_compatible, base_url: "http://{b}/v1", model: gpt-fake-backup }}
  erroring: {{ provider: openai_compatible, base_url: "http://{p}/v1", model: gpt-fake, headers: {{ x-fake-error-after: "2" }} }}
  dropping: {{ provider: anthropic, base_url: "http://{p}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-drop-after: "2", x-fake-chunk-interval-ms: "20" }} }}
  bedrock:  {{ provider: bedrock, region: us-east-1, base_url: "http://{p}", model: "us.anthropic.claude-3-5-haiku-20241022-v1:0" }}
  bedrock-invoke: {{ provider: bedrock, region: us-east-1, base_url: "http://{p}", model: "anthropic.claude-3-5-haiku-20241022-v1:0", api: invoke }}
  gemini:   {{ provider: vertex, region: us-central1, project: sdk, base_url: "http://{p}", model: gemini-2.0-flash-001 }}
  vertex-claude: {{ provider: vertex, region: us-east5, project: sdk, base_url: "http://{p}", api: anthropic, model: "claude-sonnet-4@20250514" }}
  azure:    {{ provider: azure_openai, base_url: "http://{p}", model: sdk-deployment, auth: {{ kind: none }} }}
  openai-native: {{ provider: openai, base_url: "http://{p}/v1", model: gpt-fake, auth: {{ kind: none }} }}
  compat-responses: {{ provider: openai_compatible, base_url: "http://{p}/v1", model: gpt-fake, api: responses }}
  embed-openai: {{ provider: openai_compatible, base_url: "http://{p}/v1", model: text-embedding-fake, dimensions: 8 }}
  embed-azure: {{ provider: azure_openai, base_url: "http://{p}", model: embed-deployment, auth: {{ kind: none }}, dimensions: 8 }}
  embed-titan: {{ provider: bedrock, region: us-east-1, base_url: "http://{p}", model: "amazon.titan-embed-text-v2:0", dimensions: 8 }}
  embed-cohere: {{ provider: bedrock, region: us-east-1, base_url: "http://{p}", model: "cohere.embed-english-v3", dimensions: 8 }}
  embed-vertex: {{ provider: vertex, region: us-central1, project: sdk, base_url: "http://{p}", model: text-embedding-005, dimensions: 8 }}
  embed-broken: {{ provider: openai_compatible, base_url: "http://{p}/v1", model: text-embedding-fake, dimensions: 8, headers: {{ x-fake-status: "503" }} }}
  embed-wrong-size: {{ provider: openai_compatible, base_url: "http://{p}/v1", model: text-embedding-fake, dimensions: 16 }}
  bedrock-busy: {{ provider: bedrock, region: us-east-1, base_url: "http://{p}", model: m, headers: {{ x-fake-status: "429", x-fake-retry-after: "3" }} }}
  gemini-busy: {{ provider: vertex, region: us-central1, project: sdk, base_url: "http://{p}", model: g, headers: {{ x-fake-status: "429", x-fake-retry-after: "3" }} }}
  claude-busy: {{ provider: anthropic, base_url: "http://{p}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-status: "529", x-fake-retry-after: "3" }} }}
features:
  chat: {{ hierarchy: [primary] }}
  claude: {{ hierarchy: [claude] }}
  flaky: {{ hierarchy: [broken, claude-overloaded, backup] }}
  down-openai: {{ hierarchy: [broken] }}
  down-anthropic: {{ hierarchy: [claude-overloaded] }}
  midstream: {{ hierarchy: [erroring, backup] }}
  truncated: {{ hierarchy: [dropping, backup] }}
  bedrock: {{ hierarchy: [bedrock] }}
  bedrock-invoke: {{ hierarchy: [bedrock-invoke] }}
  gemini: {{ hierarchy: [gemini] }}
  vertex-claude: {{ hierarchy: [vertex-claude] }}
  azure: {{ hierarchy: [azure] }}
  openai-native: {{ hierarchy: [openai-native] }}
  compat-responses: {{ hierarchy: [compat-responses] }}
  count-fallback: {{ hierarchy: [claude-overloaded, claude] }}
  embed-openai: {{ hierarchy: [embed-openai] }}
  embed-azure: {{ hierarchy: [embed-azure] }}
  embed-titan: {{ hierarchy: [embed-titan] }}
  embed-cohere: {{ hierarchy: [embed-cohere] }}
  embed-vertex: {{ hierarchy: [embed-vertex] }}
  embed-fallback: {{ hierarchy: [embed-broken, embed-titan] }}
  embed-wrong-size: {{ hierarchy: [embed-wrong-size] }}
  bedrock-busy: {{ hierarchy: [bedrock-busy] }}
  gemini-busy: {{ hierarchy: [gemini-busy] }}
  claude-busy: {{ hierarchy: [claude-busy] }}
"#
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
    let out = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&script)
        .env("SPILLWAY_BASE_URL", format!("http://{}", sc.sidecar.addr))
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pytest failed:\n{stdout}\n{stderr}");
    eprintln!("{}: {}", script.display(), stdout.lines().last().unwrap_or_default());
    assert!(stdout.contains("passed") && !stdout.contains("skipped"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_end_to_end() {
    run_pytest("test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_responses_and_agents_sdk_end_to_end() {
    run_pytest("test_openai_responses.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_sdk_end_to_end() {
    run_pytest("test_anthropic_sdk.py").await;
}
