//! The sidecar's listener and path router.
//!
//! Connections are served by hyper (HTTP/1.1 and h2c on the same port). Shutdown stops
//! accepting, lets in-flight requests and streams finish within a grace period, then returns.

use crate::body::{ProxyBody, text};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::proxy::unary::Unary;
use crate::routing::{Routing, RoutingTable, watch};
use crate::{AppState, proxy};
use anyhow::{Context, bail};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use spillway_api::config::version_of;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct Options {
    pub listen: SocketAddr,
    pub config: PathBuf,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request head, and how long an idle keep-alive
    /// connection is kept (HTTP/1.1; HTTP/2 connections are pinged at this interval).
    pub header_timeout: Duration,
    /// How long a client may take to send a whole request body.
    pub body_timeout: Duration,
    /// The longest upstream frame held in memory (see `protocol::DEFAULT_MAX_FRAME`).
    pub max_upstream_frame_bytes: usize,
    /// Reload the config when its file changes.
    pub watch: bool,
    /// How long in-flight requests get to finish on shutdown.
    pub grace: Duration,
    /// Managed mode: take routing from this control plane instead of `config`.
    pub control_plane: Option<String>,
    /// This sidecar's identity for the control plane.
    pub node_id: String,
    /// Where a managed sidecar keeps its last accepted snapshot.
    pub snapshot_file: Option<PathBuf>,
    /// TLS (and mutual TLS) to the control plane.
    pub control_plane_tls: Option<crate::managed::ClientTls>,
    /// This sidecar's availability zone, for the fleet view's per-zone breakdown.
    pub zone: String,
    /// How often a managed sidecar reports telemetry.
    pub report_interval: Duration,
    /// The projected service-account token that proves who this sidecar is to the control
    /// plane; re-read on every connection (the kubelet rotates it).
    pub control_plane_token_file: Option<PathBuf>,
    /// Which credentials a snapshot may name (`auth.env`, `auth.file`); see `secrets`.
    pub secrets: crate::upstream::secrets::SecretPolicy,
}

impl Options {
    pub fn new(config: PathBuf) -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            config,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_upstream_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME,
            watch: true,
            grace: Duration::from_secs(30),
            control_plane: None,
            node_id: "local".into(),
            snapshot_file: None,
            control_plane_tls: None,
            zone: String::new(),
            report_interval: Duration::from_secs(10),
            control_plane_token_file: None,
            secrets: crate::upstream::secrets::SecretPolicy::default(),
        }
    }
}

/// A running sidecar.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub routing: Arc<Routing>,
    pub metrics: Arc<Metrics>,
    /// Managed mode: bumped each time a telemetry answer from the control plane is applied.
    pub telemetry_applied: Option<tokio::sync::watch::Receiver<u64>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A sidecar dropped without [`Sidecar::shutdown`] stops too (gracefully, in the background), so
/// an embedding program or test never leaves one serving or reporting behind.
impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Sidecar {
    /// Loads the config, binds, and starts serving. Fails if the config is invalid or the
    /// address is not loopback: the sidecar holds provider credentials and must not be reachable
    /// from outside the pod.
    pub async fn start(opts: Options) -> anyhow::Result<Sidecar> {
        if !opts.listen.ip().is_loopback() {
            bail!("refusing to listen on {}: the sidecar binds loopback addresses only", opts.listen);
        }
        let metrics = Arc::new(Metrics::default());
        let mut telemetry_applied = None;
        let mut feedback = None;
        // The control-plane streams live as long as the sidecar serves.
        let mut background = Vec::new();
        let routing = if let Some(url) = &opts.control_plane {
            // Managed: start from the last accepted snapshot if there is one, else not ready.
            let routing = Arc::new(Routing::new(RoutingTable::empty()));
            let saved = opts.snapshot_file.as_deref().and_then(crate::managed::load_persisted);
            if let Some(s) = saved {
                match crate::managed::apply(&routing, &s, &opts.secrets) {
                    Ok(()) => tracing::info!(version = %s.version, "starting from the saved snapshot"),
                    Err(e) => {
                        tracing::warn!(error = %e, "the saved snapshot cannot be applied; waiting for the control plane")
                    }
                }
            }
            let node = spillway_api::v1::Node {
                id: opts.node_id.clone(),
                zone: opts.zone.clone(),
                build_version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            };
            let m = Arc::new(crate::managed::Managed {
                url: url.clone(),
                node,
                snapshot_file: opts.snapshot_file.clone(),
                tls: opts.control_plane_tls.clone(),
                token_file: opts.control_plane_token_file.clone(),
                secrets: opts.secrets.clone(),
            });
            background.push(tokio::spawn(crate::managed::run(m.clone(), routing.clone(), metrics.clone())));
            let fb = Arc::new(crate::telemetry::feedback::Feedback::default());
            let (applied, rx) = tokio::sync::watch::channel(0);
            telemetry_applied = Some(rx);
            feedback = Some(fb.clone());
            background.push(tokio::spawn(crate::telemetry::run(crate::telemetry::Reporter {
                managed: m,
                routing: routing.clone(),
                metrics: metrics.clone(),
                feedback: fb,
                interval: opts.report_interval,
                applied,
            })));
            routing
        } else {
            let text = std::fs::read_to_string(&opts.config)
                .with_context(|| format!("cannot read config {}", opts.config.display()))?;
            let source = opts.config.display().to_string();
            let config = spillway_api::config::load_str(&text, &source)?;
            let table = RoutingTable::build(&config, version_of(text.as_bytes()), &source, None, &opts.secrets)?;
            tracing::info!(file = %source, version = %table.version, features = table.features.len(), "routing config loaded");
            Arc::new(Routing::new(table))
        };
        let watch = if opts.watch && opts.control_plane.is_none() {
            Some(
                watch::watch(opts.config.clone(), routing.clone(), metrics.clone())
                    .context("cannot watch the config file")?,
            )
        } else {
            None
        };
        let listener =
            TcpListener::bind(opts.listen).await.with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            routing: routing.clone(),
            metrics: metrics.clone(),
            max_body_bytes: opts.max_body_bytes,
            body_timeout: opts.body_timeout,
            max_upstream_frame_bytes: opts.max_upstream_frame_bytes,
            feedback,
            retry_budget: std::sync::Mutex::new(crate::health::budget::Budget::new(tokio::time::Instant::now())),
            cut: Default::default(),
        });
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            serve(listener, state, rx, opts.grace, opts.header_timeout).await;
            drop(watch);
            background.iter().for_each(|t| t.abort());
        });
        tracing::info!(%addr, "spillway-proxy listening");
        Ok(Sidecar { addr, routing, metrics, telemetry_applied, shutdown: Some(tx), task })
    }

    /// Stops accepting and waits for in-flight requests (up to the grace period).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the serve loop ends (after [`Sidecar::shutdown`] from elsewhere, or never).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }

    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stop: oneshot::Receiver<()>,
    grace: Duration,
    header_timeout: Duration,
) {
    // Timeouts are set just below.
    #[allow(clippy::disallowed_methods)]
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper times the head from the moment the connection waits for one: the same limit closes
    // half-sent heads and idle keep-alive connections.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(header_timeout).keep_alive_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(grace, &mut drained).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "in-flight requests did not finish within the grace period; ending them with an error"
        );
        state.cut.cancel();
        // Their error events and replies need a moment to reach the clients.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut drained).await;
    }
}

async fn handle(state: &AppState, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => proxy::serve(state, req, Protocol::OpenAi).await,
        (&Method::POST, "/v1/messages") => proxy::serve(state, req, Protocol::Anthropic).await,
        (&Method::POST, "/v1/responses") => proxy::serve(state, req, Protocol::Responses).await,
        (&Method::POST, "/v1/messages/count_tokens") => proxy::unary::serve(state, req, Unary::CountTokens).await,
        (m, path @ "/v1/messages/count_tokens") => method_not_allowed(state, m, path, Protocol::Anthropic),
        (&Method::POST, "/v1/embeddings") => proxy::unary::serve(state, req, Unary::Embeddings).await,
        (m, path @ "/v1/embeddings") => method_not_allowed(state, m, path, Protocol::OpenAi),
        (m, path @ "/v1/responses") => method_not_allowed(state, m, path, Protocol::Responses),
        (m, path @ "/v1/messages") => method_not_allowed(state, m, path, Protocol::Anthropic),
        (m, path @ "/v1/chat/completions") => method_not_allowed(state, m, path, Protocol::OpenAi),
        (&Method::POST, "/v1/feedback") => crate::telemetry::feedback::serve(state, req).await,
        (m, path @ "/v1/feedback") => method_not_allowed(state, m, path, Protocol::OpenAi),
        (&Method::GET, "/v1/models") => models(state),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") if state.routing.load().version.is_empty() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({"ready": false, "reason": "no routing snapshot yet"}).to_string(),
        ),
        (&Method::GET, "/readyz") => {
            let table = state.routing.load();
            let reload = state.routing.status();
            // Ready all the same: every other endpoint and feature serves.
            let unavailable: Vec<serde_json::Value> = table
                .endpoints()
                .filter_map(|t| {
                    t.upstream.missing_credential().map(|why| serde_json::json!({"endpoint": &*t.name, "reason": why}))
                })
                .collect();
            let body = serde_json::json!({"ready": true, "config_version": table.version,
                "reloads_applied": reload.applied, "reloads_rejected": reload.rejected,
                "last_reload_error": reload.last_error, "unavailable_endpoints": unavailable});
            text(StatusCode::OK, "application/json", body.to_string())
        }
        (&Method::GET, "/debug/endpoints") => {
            let table = state.routing.load();
            let list: Vec<serde_json::Value> = table.endpoints().map(|t| t.health.debug(&state.metrics)).collect();
            text(StatusCode::OK, "application/json", serde_json::json!({"endpoints": list}).to_string())
        }
        (&Method::GET, "/debug/pools") => {
            let table = state.routing.load();
            let mut pools: Vec<_> = table.pools.values().collect();
            pools.sort_by(|a, b| a.name.cmp(&b.name));
            let list: Vec<serde_json::Value> = pools.iter().map(|p| p.debug()).collect();
            text(StatusCode::OK, "application/json", serde_json::json!({"pools": list}).to_string())
        }
        (&Method::GET, "/metrics") => {
            let table = state.routing.load();
            for p in table.pools.values() {
                state.metrics.pool(&p.name, p.figures());
            }
            for t in table.endpoints() {
                state.metrics.credentials_missing(&t.name, t.upstream.missing_credential().is_some());
            }
            text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.encode())
        }
        // An Anthropic SDK's calls (`/v1/messages/...`) get Anthropic's error shape.
        (_, path) => refused(
            state,
            ApiError::not_found(
                "unknown_path",
                format!(
                    "no route for {} {path}; spillway serves POST /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages and /v1/messages/count_tokens",
                    req.method()
                ),
            ),
            if path.starts_with("/v1/messages") { Protocol::Anthropic } else { Protocol::OpenAi },
        ),
    }
}

fn method_not_allowed(state: &AppState, method: &Method, path: &str, protocol: Protocol) -> Response<ProxyBody> {
    let e =
        ApiError::invalid_request("method_not_allowed", None, format!("{method} is not allowed on {path}; use POST"))
            .with_status(StatusCode::METHOD_NOT_ALLOWED);
    refused(state, e, protocol)
}

/// An API call answered before any routing (an unknown path, a wrong method): like every
/// other, it carries a request id and writes its access line.
fn refused(state: &AppState, e: ApiError, protocol: Protocol) -> Response<ProxyBody> {
    let id = proxy::new_request_id();
    proxy::record_end(state, &id, &Arc::from("-"), "-", 0, e.code, tokio::time::Instant::now());
    let mut resp = e.into_response(protocol);
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(crate::headers::REQUEST_ID, v);
    }
    resp
}

/// Features are what applications put in `model`, so they are what `/v1/models` lists.
fn models(state: &AppState) -> Response<ProxyBody> {
    let table = state.routing.load();
    let data: Vec<_> = table
        .feature_names()
        .into_iter()
        .map(|f| serde_json::json!({"id": f, "object": "model", "created": 0, "owned_by": "spillway"}))
        .collect();
    text(StatusCode::OK, "application/json", serde_json::json!({"object": "list", "data": data}).to_string())
}
