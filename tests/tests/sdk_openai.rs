//! Drives the sidecar with the official `openai` Python SDK (tests/python/test_openai_sdk.py).
//! The venv comes from tests/python/setup.sh, which the README's test command runs first.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_end_to_end() {
    let primary = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{p}", model: gpt-fake }}
  broken:  {{ provider: openai_compatible, base_url: "{p}", model: gpt-fake, headers: {{ x-fake-status: "503" }} }}
  backup:  {{ provider: openai_compatible, base_url: "{b}", model: gpt-fake-backup }}
  erroring: {{ provider: openai_compatible, base_url: "{p}", model: gpt-fake, headers: {{ x-fake-error-after: "2" }} }}
  dropping: {{ provider: openai_compatible, base_url: "{p}", model: gpt-fake, headers: {{ x-fake-drop-after: "2", x-fake-chunk-interval-ms: "20" }} }}
features:
  chat: {{ hierarchy: [primary] }}
  flaky: {{ hierarchy: [broken, backup] }}
  midstream: {{ hierarchy: [erroring, backup] }}
  truncated: {{ hierarchy: [dropping, backup] }}
"#,
        p = primary.base_url(),
        b = backup.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/test_openai_sdk.py");
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
