//! Running a real sidecar in-process for a test, and talking to it over a real socket.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use spillway_dataplane::{Options, Sidecar};
use std::path::PathBuf;

/// A sidecar on `127.0.0.1:0` reading a config file in its own temporary directory.
pub struct TestSidecar {
    pub sidecar: Sidecar,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestSidecar {
    pub async fn start(yaml: &str) -> anyhow::Result<TestSidecar> {
        Self::start_with(yaml, |_| {}).await
    }

    pub async fn start_with(yaml: &str, tweak: impl FnOnce(&mut Options)) -> anyhow::Result<TestSidecar> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("routing.yaml");
        std::fs::write(&config_path, yaml)?;
        let mut opts = Options::new(config_path.clone());
        opts.listen = "127.0.0.1:0".parse()?;
        opts.watch = false;
        tweak(&mut opts);
        let sidecar = Sidecar::start(opts).await?;
        Ok(TestSidecar { sidecar, dir, config_path })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.addr)
    }
}

/// A reply read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON payloads of a streamed reply's `data:` lines, `[DONE]` left out.
    pub fn sse_data(&self) -> Vec<serde_json::Value> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event data {d}: {e}")))
            .collect()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        TestClient { client: Client::builder(TokioExecutor::new()).build_http() }
    }
}

impl TestClient {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let resp = self.client.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }

    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut b = Request::post(url).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(body.into()))?).await
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send(Request::get(url).body(Full::new(Bytes::new()))?).await
    }
}

/// Waits (bounded at 20 s, never a fixed sleep) until `check` holds, re-checking whenever `rx`
/// fires; fails the test naming `what` it waited for.
pub async fn until<T, F, Fut>(rx: &mut tokio::sync::watch::Receiver<T>, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            rx.borrow_and_update();
            if check().await {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(waited.is_ok(), "still waiting after 20 s for: {what}");
}
