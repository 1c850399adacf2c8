//! Drives the sidecar with the official Python SDKs: `openai` (python/test_openai_sdk.py) and
//! `anthropic` (python/test_anthropic_sdk.py). The venv comes from tests/python/setup.sh, which
//! the README's test command runs first.

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
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
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
features:
  chat: {{ hierarchy: [primary] }}
  claude: {{ hierarchy: [claude] }}
  flaky: {{ hierarchy: [broken, claude-overloaded, backup] }}
  midstream: {{ hierarchy: [erroring, backup] }}
  truncated: {{ hierarchy: [dropping, backup] }}
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
    assert!(stdout.contains("passed") && !stdout.contains("skipped"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_end_to_end() {
    run_pytest("test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_sdk_end_to_end() {
    run_pytest("test_anthropic_sdk.py").await;
}
