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

/// Forwards each connection to the next backend that accepts it, like a Service.
pub async fn balancer(backends: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let candidates = backends.lock().unwrap().clone();
            let first = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                for i in 0..candidates.len() {
                    let to = candidates[(first + i) % candidates.len()];
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// What each sidecar holds of its first PT pool now: its valid lease's tokens per minute (0 when
/// it holds none).
pub async fn held(sidecars: &[TestSidecar]) -> Vec<u64> {
    let mut out = Vec::new();
    for sc in sidecars {
        let v: serde_json::Value = TestClient::default().get(&sc.url("/debug/pools")).await.unwrap().json();
        let p = &v["pools"][0];
        let valid = p["lease"].is_object() && p["lease"]["lapsed"] == false;
        out.push(if valid { p["budget_tpm"].as_u64().unwrap() } else { 0 });
    }
    out
}

/// Samples the sidecars until `done` holds (bounded at 30 s), checking at every sample that
/// what they hold together fits in `pool`.
pub async fn sample_until(sidecars: &[TestSidecar], pool: u64, what: &str, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let h = held(sidecars).await;
        let total: u64 = h.iter().sum();
        assert!(total <= pool, "{total} held by {h:?}: more than the pool ({what})");
        if done(&h) {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {h:?}");
        // Sampling, not waiting for a result: each sample is checked.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `n` managed sidecars (`shop/pod-0`, …) taking their config from the control plane at `url`,
/// reporting every 100 ms.
pub async fn managed_sidecars(url: &str, n: usize) -> Vec<TestSidecar> {
    let mut sidecars = Vec::new();
    for i in 0..n {
        let url = url.to_owned();
        let sidecar = TestSidecar::start_with("unused: true", move |o| {
            o.control_plane = Some(url);
            o.node_id = format!("shop/pod-{i}");
            o.report_interval = std::time::Duration::from_millis(100);
        });
        sidecars.push(sidecar.await.expect("a managed sidecar starts"));
    }
    sidecars
}
