//! The scenario's clients: requests at the scenario's rate, seven in ten streaming, each
//! recording what its caller saw. The breaker's state is sampled alongside.

use super::Scenario;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::time::Instant;

/// One request, as its caller saw it. Times are seconds since the scenario began.
#[derive(Debug, Clone)]
pub struct Seen {
    pub started_s: f64,
    pub stream: bool,
    /// 200 with a whole reply (a stream that ended with `[DONE]`).
    pub ok: bool,
    pub status: u16,
    /// Until the first byte of the body: the first token for a stream, the whole reply otherwise.
    pub first_s: Option<f64>,
    pub endpoint: String,
    pub spilled: bool,
}

/// The breaker of `primary` at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_s: f64,
    pub state: String,
    pub ramp_share: Option<f64>,
}

/// What the clients saw, and the primary's breaker over time.
pub struct Observed {
    pub requests: Vec<Seen>,
    pub samples: Vec<Sample>,
}

/// Request `k` streams unless `k % 10` is 1, 4 or 7: 70 % streaming, evenly spread.
fn streams(k: u64) -> bool {
    !matches!(k % 10, 1 | 4 | 7)
}

pub async fn drive(s: &Scenario, url: &str, t0: Instant) -> Observed {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let end = t0 + Duration::from_secs_f64(s.duration_s);
    let sampler = {
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut next = t0;
            while next < end {
                tokio::time::sleep_until(next).await;
                if let Some(sample) = sample(&url, t0).await {
                    samples.push(sample);
                }
                next += Duration::from_millis(500);
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    let (mut k, mut t) = (0u64, 0.0f64);
    while t < s.duration_s {
        let rate = s.rate_at(t);
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(t)).await;
        let (client, url, stream) = (client.clone(), url.to_owned(), streams(k));
        tasks.push(tokio::spawn(async move { one(&client, &url, stream, t0).await }));
        k += 1;
        t += 1.0 / rate;
    }
    let mut requests = Vec::new();
    for task in tasks {
        if let Ok(seen) = task.await {
            requests.push(seen);
        }
    }
    Observed { requests, samples: sampler.await.unwrap_or_default() }
}

async fn one(client: &Client<HttpConnector, Full<Bytes>>, url: &str, stream: bool, t0: Instant) -> Seen {
    let started = Instant::now();
    let started_s = (started - t0).as_secs_f64();
    // A caller of a PT feature names its output limit: it is what the pool is charged until the
    // reply says what it really used.
    let body = serde_json::json!({"model": "chat", "stream": stream, "max_tokens": 64,
        "messages": [{"role": "user", "content": "How do circuit breakers ramp back?"}]});
    let req = http::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a well-formed request");
    let mut seen =
        Seen { started_s, stream, ok: false, status: 0, first_s: None, endpoint: String::new(), spilled: false };
    let Ok(resp) = client.request(req).await else { return seen };
    seen.status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    seen.endpoint = header("x-spillway-endpoint");
    seen.spilled = !header("x-spillway-spilled").is_empty();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            seen.first_s.get_or_insert_with(|| started.elapsed().as_secs_f64());
            text.extend_from_slice(d);
        }
    }
    seen.ok = seen.status == 200 && (!stream || text.ends_with(b"data: [DONE]\n\n"));
    seen
}

async fn sample(url: &str, t0: Instant) -> Option<Sample> {
    let at_s = (Instant::now() - t0).as_secs_f64();
    let v: serde_json::Value = serde_json::from_str(&get(url, "/debug/endpoints").await?).ok()?;
    let primary = v["endpoints"].as_array()?.iter().find(|e| e["endpoint"] == "primary")?.clone();
    Some(Sample { at_s, state: primary["state"].as_str()?.to_owned(), ramp_share: primary["ramp_share"].as_f64() })
}

/// A GET's body as text.
pub async fn get(url: &str, path: &str) -> Option<String> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("{url}{path}")).body(Full::new(Bytes::new())).ok()?;
    let resp = client.request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}
