//! A fast, scriptable fake provider speaking OpenAI Chat Completions (also at Azure OpenAI's
//! deployment paths), Anthropic Messages, and Bedrock Runtime (SigV4-verified, event-stream
//! replies).
//!
//! Behaviour comes from the server's [`Script`] and, per request, from `x-fake-*` headers (see
//! [`Script::with_headers`]), in the manner of envoyproxy/ai-gateway's test upstream. Through the
//! sidecar, per-request headers are set with an endpoint's `headers:` in the routing config.
//! Every reply carries `x-fake-name`, so a test can tell which upstream answered.

pub mod anthropic;
pub mod bedrock;
mod body;
pub mod cloud;
pub mod kube;
mod kube_watch;
pub mod openai;
pub mod responses;
mod script;
mod unary;
pub mod vertex;

pub use script::{Hostile, Script};

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
    /// When set, Bedrock requests must carry a valid SigV4 signature by these credentials for
    /// this region, or get a 403 `InvalidSignatureException`.
    pub aws: Option<(aws_credential_types::Credentials, String)>,
    /// When set, the fake serves this token from its metadata-server path, and Vertex requests
    /// must carry it as `Authorization: Bearer`.
    pub gcp_token: Option<String>,
}

impl FakeConfig {
    pub fn named(name: &str) -> Self {
        FakeConfig {
            name: name.into(),
            script: Script::default(),
            record: true,
            require_key: None,
            aws: None,
            gcp_token: None,
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived (tokio's clock).
    pub at: tokio::time::Instant,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

struct Shared {
    config: FakeConfig,
    /// The server's current script, replaceable while it runs (a provider that heals).
    script: Mutex<Script>,
    seq: AtomicU64,
    /// Requests being answered now, for the capacity ceiling.
    in_flight: Arc<AtomicU64>,
    recorded: Mutex<Vec<Recorded>>,
    aborted: Arc<AtomicU64>,
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
        let script = Mutex::new(config.script.clone());
        let shared = Arc::new(Shared {
            config,
            script,
            seq: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
            recorded: Mutex::new(Vec::new()),
            aborted: Arc::new(AtomicU64::new(0)),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(FakeProvider { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL to put in an endpoint's config.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Changes how the fake behaves from now on: an outage starts or ends.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap_or_else(|p| p.into_inner()) = script;
    }

    /// Streams whose reader went away before the last event (the sidecar cancelled them).
    pub fn aborted_streams(&self) -> u64 {
        self.shared.aborted.load(Ordering::Relaxed)
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
    // A test fixture: it must be able to serve clients as slowly as a test wants.
    #[allow(clippy::disallowed_methods)]
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
    let script = shared.script.lock().unwrap_or_else(|p| p.into_inner()).with_headers(&parts.headers);
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    if cfg.record {
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let rec = Recorded {
            at: tokio::time::Instant::now(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body,
        };
        shared.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    // Counted from here to the reply's last byte; beyond the ceiling, a 429 like a full PT endpoint.
    let in_flight = InFlight::enter(&shared.in_flight);
    if script.max_in_flight.is_some_and(|max| in_flight.count > u64::from(max)) {
        return Ok(error(Wire::OpenAi, 429, &cfg.name, script.retry_after));
    }
    if script.reset {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fake: reset before headers"));
    }
    let path = parts.uri.path();
    if path == "/v1/models" || path == "/models" {
        return Ok(json(StatusCode::OK, Bytes::from_static(b"{\"object\":\"list\",\"data\":[]}"), &cfg.name));
    }
    if path == vertex::METADATA_TOKEN_PATH {
        let flavor_ok = parts.headers.get("metadata-flavor").is_some_and(|v| v == "Google");
        return Ok(match (&cfg.gcp_token, flavor_ok) {
            (Some(t), true) => json(StatusCode::OK, vertex::metadata_token(t), &cfg.name),
            _ => json(StatusCode::FORBIDDEN, Bytes::from_static(b"missing Metadata-Flavor"), &cfg.name),
        });
    }
    let bedrock = bedrock::route(path);
    let google = vertex::route(path);
    let wire = match (&bedrock, google) {
        (_, Some(("google", _, _))) => Wire::VertexGemini,
        (_, Some(_)) => Wire::VertexAnthropic,
        _ => match &bedrock {
            Some((_, "converse" | "converse-stream")) => Wire::BedrockConverse,
            Some(_) => Wire::BedrockInvoke,
            None if path == "/v1/messages" || path == "/v1/messages/count_tokens" => Wire::Anthropic,
            None if unary::route(path, None, None).is_some() => Wire::OpenAi,
            None if matches!(path, "/v1/responses" | "/responses" | "/openai/v1/responses") => Wire::OpenAiResponses,
            None if path == "/v1/chat/completions" || path == "/chat/completions" || is_azure_path(path) => {
                Wire::OpenAi
            }
            None => return Ok(error(Wire::OpenAi, 404, &cfg.name, None)),
        },
    };
    if parts.method != http::Method::POST {
        return Ok(error(wire, 405, &cfg.name, None));
    }
    if let Some((creds, region)) = &cfg.aws
        && bedrock.is_some()
        && let Err(why) = bedrock::verify(creds, region, parts.uri.path(), &parts.headers, &bytes)
    {
        let mut resp =
            json(StatusCode::FORBIDDEN, Bytes::from(serde_json::json!({"message": why}).to_string()), &cfg.name);
        resp.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static("InvalidSignatureException:http://internal.amazon.com/coral/"),
        );
        return Ok(resp);
    }
    if let Some(token) = &cfg.gcp_token
        && google.is_some()
        && parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {token}"))
    {
        return Ok(error(wire, 401, &cfg.name, None));
    }
    if let Some(key) = &cfg.require_key
        && bedrock.is_none()
        && google.is_none()
        && !has_key(&parts.headers, key)
    {
        return Ok(error(wire, 401, &cfg.name, None));
    }
    if let Some(to) = &script.redirect {
        let mut resp = error(wire, 307, &cfg.name, None);
        if let Ok(v) = HeaderValue::from_str(to) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(resp);
    }
    if let Some(status) = script.forced_status() {
        return Ok(error(wire, status, &cfg.name, script.retry_after));
    }
    if let Some(op) = unary::route(path, bedrock.as_ref(), google) {
        return Ok(match unary::answer(&op, &bytes) {
            Ok(body) => json(StatusCode::OK, body, &cfg.name),
            Err(status) => error(wire, status, &cfg.name, None),
        });
    }
    let (answer, stream) = match wire {
        Wire::OpenAi => match serde_json::from_slice::<openai::ChatIn>(&bytes) {
            Ok(chat) if chat.messages.is_some() => {
                (openai::Answer::new(&chat, &cfg.name, script.chunks, bytes.len(), seq), chat.stream)
            }
            _ => return Ok(error(wire, 400, &cfg.name, None)),
        },
        Wire::OpenAiResponses => match serde_json::from_slice::<responses::ResponsesIn>(&bytes) {
            Ok(r) if r.input.is_some() && !r.model.is_empty() => {
                (r.answer(&cfg.name, script.chunks, bytes.len(), seq), r.stream)
            }
            _ => return Ok(error(wire, 400, &cfg.name, None)),
        },
        Wire::Anthropic => match serde_json::from_slice::<anthropic::MessagesIn>(&bytes) {
            Ok(m) if m.messages.is_some() && m.max_tokens.is_some() => {
                (m.answer(&cfg.name, script.chunks, bytes.len(), seq), m.stream)
            }
            _ => return Ok(error(wire, 400, &cfg.name, None)),
        },
        Wire::BedrockConverse => {
            let (model, op) = bedrock.as_ref().map(|(m, o)| (m.as_str(), *o)).unwrap_or_default();
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) if !bedrock::history_is_signed(&v) => return Ok(error(wire, 400, &cfg.name, None)),
                Ok(v) if v.get("messages").is_some_and(|m| m.is_array()) && v.get("model").is_none() => (
                    bedrock::converse_answer(&v, &cfg.name, script.chunks, bytes.len(), seq, model),
                    op == "converse-stream",
                ),
                _ => return Ok(error(wire, 400, &cfg.name, None)),
            }
        }
        Wire::VertexGemini => {
            let (_, model, op) = google.unwrap_or_default();
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) if !vertex::calls_are_signed(&v) => return Ok(error(wire, 400, &cfg.name, None)),
                Ok(v) if v.get("contents").is_some_and(|c| c.is_array()) => (
                    vertex::gemini_answer(&v, &cfg.name, script.chunks, bytes.len(), seq, model),
                    op == "streamGenerateContent",
                ),
                _ => return Ok(error(wire, 400, &cfg.name, None)),
            }
        }
        Wire::VertexAnthropic => {
            let (_, model, _) = google.unwrap_or_default();
            let version_ok = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                v.get("anthropic_version").and_then(|a| a.as_str()) == Some("vertex-2023-10-16")
                    && v.get("model").is_none()
            });
            match serde_json::from_slice::<anthropic::MessagesIn>(&bytes) {
                Ok(mut m) if version_ok && m.messages.is_some() && m.max_tokens.is_some() => {
                    m.model = model.to_owned();
                    let stream = m.stream;
                    (m.answer(&cfg.name, script.chunks, bytes.len(), seq), stream)
                }
                _ => return Ok(error(wire, 400, &cfg.name, None)),
            }
        }
        Wire::BedrockInvoke => {
            let (model, op) = bedrock.as_ref().map(|(m, o)| (m.as_str(), *o)).unwrap_or_default();
            let version_ok = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                v.get("anthropic_version").is_some() && v.get("model").is_none() && v.get("stream").is_none()
            });
            match serde_json::from_slice::<anthropic::MessagesIn>(&bytes) {
                Ok(mut m) if version_ok && m.messages.is_some() && m.max_tokens.is_some() => {
                    m.model = model.to_owned();
                    (m.answer(&cfg.name, script.chunks, bytes.len(), seq), op == "invoke-with-response-stream")
                }
                _ => return Ok(error(wire, 400, &cfg.name, None)),
            }
        }
    };
    let mut answer = answer;
    if let Some(pick) = &script.tool {
        answer.tool_call = named_tool(&bytes, pick);
    }
    if hands_back_a_tool_result(&bytes) {
        // A model given what it asked for answers in words, as the next turn of an agent loop.
        answer.tool_call = None;
    }
    if !stream {
        // A whole reply comes once the whole answer is generated: as long as its stream would take.
        let generating = script.ttft + script.chunk_interval * script.chunks;
        if !generating.is_zero() {
            tokio::time::sleep(generating).await;
        }
        let body = match wire {
            Wire::OpenAi => answer.complete(),
            Wire::OpenAiResponses => responses::complete(&answer),
            Wire::Anthropic | Wire::BedrockInvoke | Wire::VertexAnthropic => anthropic::complete(&answer),
            Wire::BedrockConverse => bedrock::converse_complete(&answer),
            Wire::VertexGemini => vertex::gemini_complete(&answer),
        };
        if script.hostile == Some(Hostile::StalledBody) {
            // The head and half the body now; the rest an hour later.
            let half = body.len() / 2;
            let parts = vec![body.slice(..half), body.slice(half..)];
            let body = ScriptedBody::new(parts, std::time::Duration::ZERO, std::time::Duration::from_secs(3600), None);
            let mut resp = Response::new(body.boxed_unsync());
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            name_header(&mut resp, &cfg.name);
            return Ok(resp);
        }
        return Ok(json(StatusCode::OK, body, &cfg.name));
    }
    let [mut events, content, closing] = match wire {
        Wire::OpenAi => answer.stream_events(),
        Wire::OpenAiResponses => responses::stream_events(&answer),
        Wire::Anthropic | Wire::VertexAnthropic => anthropic::stream_events(&answer),
        Wire::BedrockConverse => bedrock::converse_stream(&answer),
        Wire::VertexGemini => vertex::gemini_stream(&answer),
        Wire::BedrockInvoke => bedrock::invoke_stream(&answer),
    };
    let mut abort_after = None;
    let mut endless = None;
    if let Some(h) = script.hostile {
        let filler = |b: u8| Bytes::from(vec![b; 16 * 1024]);
        match h {
            Hostile::EndlessLine { after } => {
                events.extend(content.into_iter().take(after as usize));
                events.push(Bytes::from_static(b"data: {\"junk\":\""));
                endless = Some(filler(b'x'));
            }
            Hostile::KeepAlives => endless = Some(Bytes::from(b": keep-alive\n\n".repeat(1024))),
            Hostile::HugeFrame => {
                // total length 0xFFFF_FFF0, no headers, a prelude CRC that does not matter:
                // the length is what a decoder would trust first.
                events = vec![Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0, 0, 0, 0, 0])];
                endless = Some(filler(0));
            }
            // A stream that stalls is a slow first token or chunk interval; this one is for
            // whole replies.
            Hostile::StalledBody => {
                events.extend(content);
                events.extend(closing);
            }
        }
    } else if let Some(n) = script.error_after {
        events.extend(content.into_iter().take(n as usize));
        events.push(match wire {
            Wire::OpenAi => openai::stream_error_event(),
            Wire::OpenAiResponses => responses::stream_error_event(),
            Wire::Anthropic | Wire::VertexAnthropic => anthropic::stream_error_event(),
            Wire::VertexGemini => vertex::gemini_stream_error(),
            Wire::BedrockConverse | Wire::BedrockInvoke => {
                bedrock::exception("throttlingException", "Too many tokens, please wait before trying again.")
            }
        });
    } else if let Some(n) = script.drop_after {
        events.extend(content.into_iter().take(n as usize));
        abort_after = Some(events.len());
    } else {
        events.extend(content);
        events.extend(closing);
    }
    let mut body = ScriptedBody::new(events, script.ttft, script.chunk_interval, abort_after)
        .count_aborts(shared.aborted.clone())
        .hold(in_flight);
    if let Some(chunk) = endless {
        body = body.then_forever(chunk);
    }
    let mut resp = Response::new(body.boxed_unsync());
    let content_type = match wire {
        Wire::OpenAi | Wire::OpenAiResponses | Wire::Anthropic | Wire::VertexGemini | Wire::VertexAnthropic => {
            "text/event-stream; charset=utf-8"
        }
        Wire::BedrockConverse | Wire::BedrockInvoke => "application/vnd.amazon.eventstream",
    };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    name_header(&mut resp, &cfg.name);
    Ok(resp)
}

/// One request being answered; the count includes it.
struct InFlight {
    counter: Arc<AtomicU64>,
    count: u64,
}

impl InFlight {
    fn enter(counter: &Arc<AtomicU64>) -> Self {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        InFlight { counter: counter.clone(), count }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Wire {
    OpenAi,
    OpenAiResponses,
    Anthropic,
    BedrockConverse,
    BedrockInvoke,
    VertexGemini,
    VertexAnthropic,
}

/// The call to `name` with placeholder arguments, if the request offers a tool of that name
/// (in any provider's spelling of a tool list); `none` never matches.
fn named_tool(body: &[u8], name: &str) -> Option<(String, String)> {
    fn find<'a>(v: &'a serde_json::Value, name: &str) -> Option<Option<&'a serde_json::Value>> {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("name").and_then(|n| n.as_str()) == Some(name) {
                    let schema = m
                        .get("input_schema")
                        .or(m.get("parameters"))
                        .or(m.get("parametersJsonSchema"))
                        .or(m.get("inputSchema").and_then(|s| s.get("json")));
                    return Some(schema);
                }
                m.values().find_map(|x| find(x, name))
            }
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, name)),
            _ => None,
        }
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let tools = v.get("tools").or(v.get("toolConfig"))?;
    let schema = find(tools, name)?;
    openai::choose_tool(std::iter::once((name, schema)), openai::Choice::First)
}

/// Whether the request's latest turn hands back a tool's result, in any provider's spelling:
/// an OpenAI `tool` message, a Responses `function_call_output` item, an Anthropic `tool_result`
/// block, a Converse `toolResult` or a Gemini `functionResponse`.
fn hands_back_a_tool_result(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let turns = ["messages", "contents", "input"].iter().find_map(|k| v.get(*k).and_then(|t| t.as_array()));
    let Some(last) = turns.and_then(|t| t.last()) else { return false };
    let is = |k: &str, want: &str| last.get(k).and_then(|x| x.as_str()) == Some(want);
    let blocks = last.get("content").or(last.get("parts")).and_then(|c| c.as_array());
    is("role", "tool")
        || is("type", "function_call_output")
        || blocks.into_iter().flatten().any(|b| {
            b.get("type").and_then(|t| t.as_str()) == Some("tool_result")
                || b.get("toolResult").is_some()
                || b.get("functionResponse").is_some()
        })
}

/// Azure OpenAI: `/openai/deployments/{deployment}/chat/completions?api-version=…`.
fn is_azure_path(path: &str) -> bool {
    path.strip_prefix("/openai/deployments/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(deployment, tail)| !deployment.is_empty() && tail == "chat/completions")
}

/// The key in any of the ways providers take it: `Authorization: Bearer`, `x-api-key`, `api-key`.
fn has_key(h: &HeaderMap, key: &str) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    get("authorization").and_then(|v| v.strip_prefix("Bearer ")) == Some(key)
        || get("x-api-key") == Some(key)
        || get("api-key") == Some(key)
}

fn json(status: StatusCode, body: Bytes, name: &str) -> Response<FakeBody> {
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    name_header(&mut resp, name);
    resp
}

fn error(wire: Wire, status: u16, name: &str, retry_after: Option<u64>) -> Response<FakeBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (aws_type, body) = match wire {
        Wire::OpenAi | Wire::OpenAiResponses => (None, openai::error_body(status)),
        Wire::Anthropic => (None, anthropic::error_body(status)),
        // Front-door errors of Vertex (quota, auth, URL) come in Google's shape for both publishers.
        Wire::VertexGemini | Wire::VertexAnthropic => (None, vertex::error_body(status)),
        Wire::BedrockConverse | Wire::BedrockInvoke => {
            let (kind, body) = bedrock::error(status);
            (Some(kind), body)
        }
    };
    let mut resp = json(code, body, name);
    if let Some(kind) = aws_type
        && let Ok(v) = HeaderValue::from_str(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
    {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
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
