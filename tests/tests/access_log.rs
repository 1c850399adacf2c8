//! Every API call the sidecar answers writes one access line and carries the request id that
//! names it — the served ones, and also those refused before routing, those for unknown
//! features, paths or methods, those every endpoint failed, and the one-body operations.

use serde_json::json;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_and_one_access_line() {
    // The access lines go through tracing when no batched writer is installed, as in a test.
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("spillway::access=info")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let fake = FakeProvider::start(FakeConfig::named("primary")).await.unwrap();
    let f = fake.addr;
    let yaml = format!(
        r#"
endpoints:
  good: {{ provider: openai_compatible, base_url: "http://{f}/v1", model: m, dimensions: 8 }}
  down: {{ provider: openai_compatible, base_url: "http://{f}/v1", model: m, headers: {{ x-fake-status: "503" }} }}
features:
  chat: {{ hierarchy: [good] }}
  broken: {{ hierarchy: [down] }}
  embed: {{ hierarchy: [good] }}
"#
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    let client = TestClient::default();
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let post = |path: &'static str, body: String| {
        let client = &client;
        let url = sc.url(path);
        async move { client.post_json(&url, &[], body).await.unwrap() }
    };
    let answers: Vec<(Reply, &str, &str)> = vec![
        (post("/v1/chat/completions", chat("chat")).await, "ok", "good"),
        (post("/v1/chat/completions", "{not json".into()).await, "invalid_request", "-"),
        (post("/v1/chat/completions", chat("nope")).await, "unknown_feature", "-"),
        (post("/v1/chat/completions", chat("broken")).await, "all_endpoints_failed", "-"),
        (post("/v1/embeddings", json!({"model": "embed", "input": "hi"}).to_string()).await, "ok", "good"),
        (post("/v1/nowhere", "{}".into()).await, "unknown_path", "-"),
        (client.get(&sc.url("/v1/chat/completions")).await.unwrap(), "method_not_allowed", "-"),
    ];
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = text.lines().filter(|l| l.contains("spillway::access")).collect();
    assert_eq!(logged.len(), answers.len(), "one line per answer:\n{text}");
    for (reply, outcome, endpoint) in &answers {
        let id = reply.header("x-spillway-request-id");
        assert!(id.starts_with("req_"), "every answer names its request: {} {}", reply.status, reply.text());
        let line = logged
            .iter()
            .find(|l| l.contains(&format!("request_id={id} ")))
            .unwrap_or_else(|| panic!("no access line for {id}:\n{text}"));
        assert!(line.contains(&format!("outcome=\"{outcome}\"")), "{line}");
        assert!(line.contains(&format!("endpoint={endpoint} ")), "{line}");
    }
}
