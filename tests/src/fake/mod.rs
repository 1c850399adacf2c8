//! A fast, scriptable, OpenAI-compatible fake provider.
//!
//! Behaviour comes from the server's [`Script`] and, per request, from `x-fake-*` headers (see
//! [`Script::with_headers`]), in the manner of envoyproxy/ai-gateway's test upstream. Through the
//! sidecar, per-request headers are set with an endpoint's `headers:` in the routing config.
//! Every reply carries `x-fake-name`, so a test can tell which upstream answered.

mod body;
pub mod openai;
mod script;

pub use script::Script;

use body::ScriptedBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

type FakeBody = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Shown in replies ("Hello from NAME.") and in the `x-fake-name` header.
    pub name: String,
    pub script: Script,
    /// Keep every request for inspection (tests); off for load.
    pub record: bool,
    /// When set, requests without `Authorization: Bearer <key>` get a 401.
    pub require_key: Option<String>,
}

impl FakeConfig {
    pub fn named(name: &str) -> Self {
        FakeConfig { name: name.into(), script: Script::default(), record: true, require_key: None }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

struct Shared {
    config: FakeConfig,
    seq: AtomicU64,
    recorded: Mutex<Vec<Recorded>>,
}

/// A running fake; stops when dropped.
pub struct FakeProvider {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeProvider> {
        Self::start_on("127.0.0.1:0".parse().expect("literal address"), config).await
    }

    pub async fn start_on(addr: SocketAddr, config: FakeConfig) -> std::io::Result<FakeProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { config, seq: AtomicU64::new(0), recorded: Mutex::new(Vec::new()) });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(FakeProvider { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL to put in an endpoint's config.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far (including refused ones).
    pub fn hits(&self) -> u64 {
        self.shared.seq.load(Ordering::Relaxed)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { handle(&shared, req).await }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// An `Err` makes hyper drop the connection without a response: the "reset before headers" case.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Response<FakeBody>, std::io::Error> {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let cfg = &shared.config;
    let (parts, body) = req.into_parts();
    let script = cfg.script.with_headers(&parts.headers);
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    if cfg.record {
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let rec = Recorded { path: parts.uri.path().to_owned(), headers: parts.headers.clone(), body };
        shared.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    if script.reset {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fake: reset before headers"));
    }
    let path = parts.uri.path();
    if path == "/v1/models" || path == "/models" {
        return Ok(json(StatusCode::OK, Bytes::from_static(b"{\"object\":\"list\",\"data\":[]}"), &cfg.name));
    }
    if parts.method != http::Method::POST || !(path == "/v1/chat/completions" || path == "/chat/completions") {
        return Ok(error(404, &cfg.name, None));
    }
    if let Some(key) = &cfg.require_key {
        let want = format!("Bearer {key}");
        if parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            return Ok(error(401, &cfg.name, None));
        }
    }
    if let Some(status) = script.forced_status() {
        return Ok(error(status, &cfg.name, script.retry_after));
    }
    let Ok(chat) = serde_json::from_slice::<openai::ChatIn>(&bytes) else { return Ok(error(400, &cfg.name, None)) };
    if chat.messages.is_none() {
        return Ok(error(400, &cfg.name, None));
    }
    let answer = openai::Answer::new(&chat, &cfg.name, script.chunks, bytes.len(), seq);
    if !chat.stream {
        if !script.ttft.is_zero() {
            tokio::time::sleep(script.ttft).await;
        }
        return Ok(json(StatusCode::OK, answer.complete(), &cfg.name));
    }
    let (mut events, closing) = answer.stream_events();
    let mut abort_after = None;
    // drop_after / error_after count content chunks; the role chunk comes first.
    if let Some(n) = script.error_after {
        events.truncate(n as usize + 1);
        events.push(openai::stream_error_event());
    } else if let Some(n) = script.drop_after {
        events.truncate(n as usize + 1);
        abort_after = Some(events.len());
    } else {
        events.extend(closing);
    }
    let body = ScriptedBody::new(events, script.ttft, script.chunk_interval, abort_after);
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    name_header(&mut resp, &cfg.name);
    Ok(resp)
}

fn json(status: StatusCode, body: Bytes, name: &str) -> Response<FakeBody> {
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    name_header(&mut resp, name);
    resp
}

fn error(status: u16, name: &str, retry_after: Option<u64>) -> Response<FakeBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json(code, openai::error_body(status), name);
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn name_header(resp: &mut Response<FakeBody>, name: &str) {
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-fake-name", v);
    }
}
