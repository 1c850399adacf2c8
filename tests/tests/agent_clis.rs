//! The agent CLIs people point at a gateway, run non-interactively through the sidecar against
//! the fake providers, natively and translated, with a tool loop each:
//!
//! - Claude Code (`claude -p`, its default model; the feature comes in a custom header), which
//!   sends mid-conversation system messages, thinking, betas and `cache_control`;
//! - Codex CLI (`codex exec`, the Responses API), which sends tool namespaces and reasoning
//!   items, offline with `--disable plugins` and web search off (a hosted tool only OpenAI runs).
//!
//! The CLIs come from tests/cli/setup.sh (the README test command runs it). Telemetry, update
//! checks and error reporting are switched off, and every URL they are given is 127.0.0.1.

use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::TestSidecar;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn tool(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("SPILLWAY_CLI_TOOLS").map_or_else(|| root.join("target/cli-tools"), PathBuf::from);
    let p = dir.join("node_modules/.bin").join(name);
    assert!(p.exists(), "{} is missing: run `bash tests/cli/setup.sh` (the README test command does)", p.display());
    p
}

/// One fake, and a feature per (protocol, native or translated, words or a tool call).
async fn setup() -> (FakeProvider, TestSidecar) {
    let mut cfg = FakeConfig::named("primary");
    cfg.record = true;
    let fake = FakeProvider::start(cfg).await.unwrap();
    let f = fake.addr;
    let yaml = format!(
        r#"
endpoints:
  anthropic:       {{ provider: anthropic, base_url: "http://{f}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-tool: none }} }}
  anthropic-read:  {{ provider: anthropic, base_url: "http://{f}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-tool: Read }} }}
  anthropic-exec:  {{ provider: anthropic, base_url: "http://{f}", model: claude-fake, auth: {{ kind: none }}, headers: {{ x-fake-tool: exec_command }} }}
  openai:          {{ provider: openai, base_url: "http://{f}/v1", model: gpt-fake, auth: {{ kind: none }}, headers: {{ x-fake-tool: none }} }}
  openai-exec:     {{ provider: openai, base_url: "http://{f}/v1", model: gpt-fake, auth: {{ kind: none }}, headers: {{ x-fake-tool: exec_command }} }}
  compat:          {{ provider: openai_compatible, base_url: "http://{f}/v1", model: gpt-fake, headers: {{ x-fake-tool: none }} }}
  compat-read:     {{ provider: openai_compatible, base_url: "http://{f}/v1", model: gpt-fake, headers: {{ x-fake-tool: Read }} }}
features:
  claude-native: {{ hierarchy: [anthropic] }}
  claude-native-tools: {{ hierarchy: [anthropic-read] }}
  claude-translated: {{ hierarchy: [compat] }}
  claude-translated-tools: {{ hierarchy: [compat-read] }}
  codex-native: {{ hierarchy: [openai] }}
  codex-native-tools: {{ hierarchy: [openai-exec] }}
  codex-translated: {{ hierarchy: [anthropic] }}
  codex-translated-tools: {{ hierarchy: [anthropic-exec] }}
"#
    );
    (fake, TestSidecar::start(&yaml).await.unwrap())
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(mut cmd: tokio::process::Command) -> Run {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the CLI did not finish within 120 s")
        .expect("run the CLI");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `claude -p` with its default model, the feature named in a custom header.
async fn claude(sc: &TestSidecar, feature: &str, prompt: &str) -> serde_json::Value {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(tool("claude"));
    cmd.args(["-p", prompt, "--output-format", "json"])
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", format!("http://{}", sc.sidecar.addr))
        .env("ANTHROPIC_API_KEY", "sk-unused-by-the-sidecar")
        .env("ANTHROPIC_CUSTOM_HEADERS", format!("x-spillway-feature: {feature}"))
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    let r = run(cmd).await;
    assert!(r.ok, "claude -p through `{feature}` failed:\n{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("claude's JSON result: {e}\n{}", r.stdout))
}

/// `codex exec` on the Responses API, the feature as its model.
async fn codex(sc: &TestSidecar, feature: &str, prompt: &str) -> Run {
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "model_provider = \"spillway\"\n[model_providers.spillway]\nname = \"spillway\"\nbase_url = \"http://{}/v1\"\nwire_api = \"responses\"\nenv_key = \"SPILLWAY_TEST_KEY\"\n",
        sc.sidecar.addr
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(tool("codex"));
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--disable",
        "plugins",
        "-c",
        "web_search=disabled",
        "-m",
        feature,
        prompt,
    ])
    .current_dir(work.path())
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", home.path())
    .env("CODEX_HOME", home.path())
    .env("SPILLWAY_TEST_KEY", "sk-unused-by-the-sidecar");
    let r = run(cmd).await;
    assert!(r.ok, "codex exec through `{feature}` failed:\n{}\n{}", r.stdout, r.stderr);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_the_sidecar_native_and_translated() {
    let (fake, sc) = setup().await;
    for feature in ["claude-native", "claude-translated"] {
        let r = claude(&sc, feature, "Say hello").await;
        assert_eq!(r["is_error"], false, "{feature}: {r}");
        assert!(r["result"].as_str().unwrap_or_default().starts_with("Hello from primary."), "{feature}: {r}");
    }
    // Claude Code's own first request passes through untouched: the provider sees its system
    // prompt and tools, and the betas and version it sent.
    let sent = fake.recorded();
    let native = sent.iter().find(|r| r.path == "/v1/messages").expect("a Messages request reached the fake");
    assert!(native.body["tools"].as_array().is_some_and(|t| t.len() > 5), "{}", native.body);
    assert!(native.headers.contains_key("anthropic-beta"), "betas are forwarded");
    // What a stricter gateway refused: a system message mid-conversation, and fields the
    // Messages API knows and spillway need not (`context_management`, adaptive thinking).
    let roles: Vec<&str> =
        native.body["messages"].as_array().unwrap().iter().filter_map(|m| m["role"].as_str()).collect();
    assert!(roles.iter().skip(1).any(|r| *r == "system"), "{roles:?}");
    assert!(
        native.body.get("context_management").is_some() && native.body.get("thinking").is_some(),
        "{}",
        native.body
    );
    let translated = sent.iter().find(|r| r.path == "/v1/chat/completions").expect("a translated request");
    assert_eq!(translated.body["messages"][0]["role"], "system", "{}", translated.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_tool_loops_native_and_translated() {
    let (_fake, sc) = setup().await;
    for feature in ["claude-native-tools", "claude-translated-tools"] {
        // The model asks to read a file; Claude Code reads it (it does not exist), hands the
        // result back, and the model answers.
        let r = claude(&sc, feature, "What is in the README?").await;
        assert_eq!(r["num_turns"], 2, "{feature}: {r}");
        assert!(r["result"].as_str().unwrap_or_default().starts_with("Hello from primary."), "{feature}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_through_the_sidecar_native_and_translated() {
    let (fake, sc) = setup().await;
    for feature in ["codex-native", "codex-translated"] {
        let r = codex(&sc, feature, "Say hello").await;
        assert!(
            r.stdout.trim_end().ends_with("Hello from primary. w1 w2 w3 w4"),
            "{feature}:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    let sent = fake.recorded();
    // Native: Codex's own Responses body, its tool namespace included.
    let native = sent.iter().find(|r| r.path == "/v1/responses").expect("a Responses request reached the fake");
    assert!(native.body["tools"].as_array().unwrap().iter().any(|t| t["type"] == "namespace"), "{}", native.body);
    // Translated: the namespace's tools reach Claude flattened.
    let translated = sent.iter().find(|r| r.path == "/v1/messages").expect("a translated request");
    let names: Vec<&str> =
        translated.body["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("__")) && names.contains(&"exec_command"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_tool_loops_native_and_translated() {
    let (_fake, sc) = setup().await;
    for feature in ["codex-native-tools", "codex-translated-tools"] {
        // The model asks to run a command; Codex runs it (it fails: `fake-cmd` is not one),
        // hands the output back, and the model answers.
        let r = codex(&sc, feature, "Run a command").await;
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("fake-cmd"), "{feature}: the command ran:\n{all}");
        assert!(r.stdout.trim_end().ends_with("Hello from primary. w1 w2 w3 w4"), "{feature}:\n{all}");
    }
}
