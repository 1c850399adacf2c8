//! `stream-probe`: what `oha` cannot measure for the load harness (`bench/load.py`).
//!
//! - `ttft`: sends `--requests` streaming requests, `--concurrency` at a time, and reports the
//!   time to the first SSE `data:` line and to the end of the stream (HDR percentiles, µs);
//! - `hold`: opens `--concurrency` streams at once and reads them to the end; the fake paces its
//!   chunks, so they stay open long enough for the harness to read the sidecar's RSS.
//!
//! Prints one JSON object.

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Ttft,
    Hold,
}

#[derive(Parser)]
#[command(name = "stream-probe")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// The chat completions URL.
    #[arg(long)]
    url: String,
    /// The `model` (a feature through the sidecar, a model direct).
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One streaming request: (time to first `data:` line, total), or an error.
async fn one(client: &HttpClient, url: &str, body: &Bytes) -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if first.is_none() && frame.data_ref().is_some_and(|d| d.windows(5).any(|w| w == b"data:")) {
            first = Some(start.elapsed());
        }
    }
    Ok((first.ok_or("a stream without data")?, start.elapsed()))
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    serde_json::json!({"p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99), "max": h.max(), "count": h.len()})
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(a.concurrency).build_http();
    let body = Bytes::from(
        serde_json::json!({"model": a.model, "stream": true, "messages": [{"role": "user", "content": "hello"}]})
            .to_string(),
    );
    let (url, requests, concurrency) = (Arc::new(a.url), a.requests, a.concurrency.max(1));
    match a.mode {
        Mode::Ttft => {
            // Warm the connection pool first: connects are not what is measured.
            for _ in 0..concurrency {
                let _ = one(&client, &url, &body).await;
            }
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ttft = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                    let mut total = ttft.clone();
                    let mut errors = 0u64;
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                        match one(&client, &url, &body).await {
                            Ok((f, t)) => {
                                ttft.saturating_record(f.as_micros() as u64);
                                total.saturating_record(t.as_micros() as u64);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    (ttft, total, errors)
                }));
            }
            let mut ttft = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut total = ttft.clone();
            let mut errors = 0;
            for t in tasks {
                let (f, tt, e) = t.await.expect("task");
                ttft.add(f).expect("same bounds");
                total.add(tt).expect("same bounds");
                errors += e;
            }
            let out =
                serde_json::json!({"ttft_us": percentiles(&ttft), "total_us": percentiles(&total), "errors": errors});
            println!("{out}");
        }
        Mode::Hold => {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tasks.push(tokio::spawn(async move { one(&client, &url, &body).await }));
            }
            let mut ok = 0;
            let mut errors = Vec::new();
            for t in tasks {
                match t.await.expect("task") {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e),
                }
            }
            errors.truncate(3);
            let out = serde_json::json!({"streams": ok, "errors": errors, "seconds": started.elapsed().as_secs_f64()});
            println!("{out}");
        }
    }
    std::process::ExitCode::SUCCESS
}
