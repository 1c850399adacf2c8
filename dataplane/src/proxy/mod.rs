//! The request path: resolve the feature, walk its hierarchy, commit the first good reply.
//!
//! # Layout
//!
//! - this module: feature resolution, the fallback loop, the final response and its headers;
//! - [`plan`]: which endpoints this request may try, in order (last resorts at the end);
//! - [`hedge`]: the bound on hedges racing, per feature;
//! - [`attempt`]: one endpoint, up to the commit point;
//! - [`stream`]: the committed stream's body, which always ends well-formed;
//! - [`unary`]: operations answered with one body (token counting, embeddings).

mod attempt;
pub mod hedge;
pub mod plan;
mod stream;
pub mod unary;

use crate::AppState;
use crate::body::{ProxyBody, full};
use crate::canonical;
use crate::capacity::ledger::Charge;
use crate::capacity::{Pool, Spill};
use crate::error::ApiError;
use crate::health::breaker::Observation;
use crate::inbound;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::protocol::{Protocol, Wire, anthropic, openai, responses};
use crate::routing::{EndpointTarget, FeatureRoute, RoutingTable};
use crate::upstream::failure::{AttemptFailure, FailureKind};
use attempt::Reply;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use plan::Planned;
use spillway_api::config::{HedgeAfter, RetryBudget};
use std::sync::Arc;
use tokio::time::Instant;

pub const FEATURE_HEADER: &str = "x-spillway-feature";

/// What a request still in flight when the shutdown grace ends gets: retryable, elsewhere.
fn shutting_down() -> ApiError {
    let mut e = ApiError::invalid_request(
        "shutting_down",
        None,
        "the spillway sidecar is shutting down and its grace period ended; retry the request",
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE);
    e.kind = "service_unavailable";
    e.retry_after_s = Some(1);
    e
}

/// The error event a stream still open when the shutdown grace ends is closed with.
pub const SHUTDOWN_MESSAGE: &str = "the spillway sidecar is shutting down and its grace period ended mid-stream";

/// What every attempt of one request shares.
pub struct RequestCtx {
    pub id: String,
    pub feature: Arc<FeatureRoute>,
    pub retry_budget: RetryBudget,
    pub started: Instant,
    pub deadline: Instant,
    /// The longest upstream frame held in memory.
    pub max_frame: usize,
    /// Fires when the shutdown grace period ends (see `AppState::cut`).
    pub cut: tokio_util::sync::CancellationToken,
}

/// Records a request's end exactly once: metrics, the endpoint's health, and the access log line.
pub struct Finish {
    metrics: Arc<Metrics>,
    feature: Arc<str>,
    pub target: Arc<EndpointTarget>,
    request_id: String,
    started: Instant,
    /// When this attempt began, and (streams only) its time to first token once known.
    attempt_started: Instant,
    ttft: Option<std::time::Duration>,
    /// The breaker already counted this attempt as slow while it waited for a first token.
    counted_in_flight: bool,
    /// The longest pause between two events of the stream (set by the stream body).
    pub max_gap: Option<std::time::Duration>,
    /// Tokens the reply reported using (set when the reply or the stream says).
    pub usage: Option<crate::canonical::Usage>,
    /// The PT charge this attempt holds: settled with real usage on success, released otherwise.
    charge: Option<(Arc<Pool>, Charge)>,
    spilled: Option<Spill>,
    /// The committed attempt carries the request's place among the feature's requests in flight
    /// until its reply ends.
    in_flight: Option<hedge::InFlight>,
    /// The feature's typical output, for the next requests' estimates.
    output_avg: Arc<crate::capacity::Average>,
    attempts: usize,
    /// Managed mode: an answered request may be rated with `POST /v1/feedback`.
    feedback: Option<Arc<crate::telemetry::feedback::Feedback>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some((pool, charge)) = self.charge.take() {
            pool.release(charge);
        }
    }
}

impl Finish {
    pub fn done(mut self, outcome: Outcome) {
        let ok = outcome == Outcome::Ok;
        if let Some(u) = self.usage.filter(|_| ok) {
            self.output_avg.record(u.output_tokens);
        }
        if let Some(f) = self.feedback.as_ref().filter(|_| ok) {
            f.served(&self.request_id, &self.feature, &self.target.name);
        }
        if let Some((pool, charge)) = self.charge.take() {
            if ok {
                let actual = self.usage.map_or(charge.estimate, |u| u.total());
                pool.settle(charge, actual);
            } else {
                pool.release(charge);
            }
        }
        let elapsed = self.started.elapsed();
        if outcome == Outcome::ClientCancelled {
            self.target.health.record_cancelled(self.attempt_started.elapsed());
        } else {
            let o = Observation {
                failed: outcome.is_failure(),
                throttled: false,
                ttft: self.ttft,
                total: self.attempt_started.elapsed(),
                max_gap: self.max_gap,
                output_tokens: self.usage.map(|u| u.output_tokens),
            };
            self.target.health.record(&o, outcome.class(), self.counted_in_flight, &self.metrics);
        }
        self.metrics.latency(&self.feature, &self.target.name, outcome, elapsed);
        self.metrics.attempt(&self.feature, &self.target.name, outcome);
        self.metrics.request(&self.feature, outcome.as_str());
        crate::log::access::record(&crate::log::access::Record {
            request_id: &self.request_id,
            feature: &self.feature,
            endpoint: &self.target.name,
            attempts: self.attempts,
            outcome,
            elapsed,
        });
    }
}

/// Serves one API call in the caller's `protocol`: `POST /v1/chat/completions` (OpenAI),
/// `POST /v1/messages` (Anthropic) or `POST /v1/responses` (OpenAI Responses).
pub async fn serve(
    state: &AppState,
    req: http::Request<hyper::body::Incoming>,
    protocol: Protocol,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let id = new_request_id();
    let (parts, body) = req.into_parts();
    let table = state.routing.load();
    let parsed = match inbound::read_body(&parts.headers, body, state.max_body_bytes, state.body_timeout).await {
        Ok(bytes) => match protocol {
            Protocol::OpenAi => inbound::openai::parse(&bytes),
            Protocol::Anthropic => inbound::anthropic::parse(&bytes, &parts.headers),
            Protocol::Responses => inbound::responses::parse(&bytes),
        },
        Err(e) => Err(e),
    };
    let mut resp = match parsed {
        Err(e) => {
            state.metrics.request(&feature_label(&table, &parts.headers), "invalid_request");
            e.into_response(protocol)
        }
        Ok(request) => match resolve_feature(&table, &parts.headers, &request.model) {
            Err(e) => {
                state.metrics.request(&Arc::from("-"), "unknown_feature");
                e.into_response(protocol)
            }
            Ok(feature) => {
                let ctx = RequestCtx {
                    id: id.clone(),
                    deadline: started + feature.deadline,
                    feature,
                    retry_budget: table.retry_budget.clone(),
                    started,
                    max_frame: state.max_upstream_frame_bytes,
                    cut: state.cut.clone(),
                };
                tokio::select! {
                    biased;
                    resp = route(state, request, ctx) => resp,
                    () = state.cut.cancelled() => {
                        state.metrics.request(&feature_label(&table, &parts.headers), "shutdown");
                        shutting_down().into_response(protocol)
                    }
                }
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-spillway-request-id", v);
    }
    resp
}

/// The feature comes from the header, else from `model` when it names one.
fn resolve_feature(table: &RoutingTable, headers: &HeaderMap, model: &str) -> Result<Arc<FeatureRoute>, ApiError> {
    if table.version.is_empty() {
        // A managed sidecar before its first snapshot: retryable, unlike an unknown feature.
        let mut e = ApiError::invalid_request(
            "not_ready",
            None,
            "spillway has no routing config yet (waiting for the control plane); retry shortly",
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE);
        e.kind = "service_unavailable";
        e.retry_after_s = Some(1);
        return Err(e);
    }
    let known = || table.feature_names().join(", ");
    if let Some(h) = headers.get(FEATURE_HEADER) {
        let name = h.to_str().unwrap_or_default();
        return table.features.get(name).cloned().ok_or_else(|| {
            ApiError::not_found(
                "unknown_feature",
                format!("unknown feature `{name}` in {FEATURE_HEADER}; known features: {}", known()),
            )
        });
    }
    table.features.get(model).cloned().ok_or_else(|| {
        ApiError::not_found(
            "unknown_feature",
            format!(
                "model `{model}` is not a feature, and no {FEATURE_HEADER} header was sent; known features: {}",
                known()
            ),
        )
    })
}

fn feature_label(table: &RoutingTable, headers: &HeaderMap) -> Arc<str> {
    let known = headers.get(FEATURE_HEADER).and_then(|h| h.to_str().ok()).and_then(|f| table.features.get(f));
    known.map_or_else(|| Arc::from("-"), |f| f.name.clone())
}

async fn route(state: &AppState, mut req: inbound::Request, ctx: RequestCtx) -> Response<ProxyBody> {
    // Translate only when some endpoint speaks another protocol than the caller; a request
    // that cannot be translated is the caller's to fix, before anything is sent.
    let canonical =
        if ctx.feature.hierarchy.iter().any(|t| !t.upstream.wire_for(req.protocol).passes_through(req.protocol)) {
            let decoded = match req.protocol {
                Protocol::OpenAi => openai::decode_request(&req.body),
                Protocol::Anthropic => anthropic::decode_request(&req.body),
                Protocol::Responses => responses::decode_request(&req.body),
            };
            match decoded {
                Ok(c) => Some(c),
                Err(e) => {
                    state.metrics.request(&ctx.feature.name, "invalid_request");
                    return e.into_response(req.protocol);
                }
            }
        } else {
            None
        };
    let mut in_flight = Some(ctx.feature.load.enter());
    let mut failures: Vec<(Arc<str>, AttemptFailure)> = Vec::new();
    // Endpoints this request has been sent to: a plan can name one twice (a tier and another's
    // twin), and a second try of the same endpoint within one request is never worth it.
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut attempts = 0;
    state.budget().request(Instant::now(), &ctx.retry_budget);
    let mut budget_refused = false;
    let estimate = crate::capacity::estimate(req.body_len, max_output(&req), ctx.feature.output_avg.get());
    let mut plan = plan::plan(&ctx.feature, estimate, &state.metrics);
    // A hedge races a late *first token*: only a stream has one. A whole reply is bounded by the
    // attempt timeout and judged by the breaker on its total time.
    let hedging = ctx
        .feature
        .hedge
        .as_ref()
        .filter(|_| req.stream && (ctx.feature.hedge_tool_results || !ends_with_tool_results(&req)));
    // PT accounting wants real usage; an OpenAI client streaming without asking for it gets it
    // asked for on PT endpoints, and the extra chunk is hidden from it.
    let client_stream_options = req.body.get("stream_options").cloned();
    let client_wants_usage =
        client_stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool()) == Some(true);
    let mut i = 0;
    while let Some(planned) = plan.get(i).cloned() {
        i += 1;
        let target = &planned.target;
        if Instant::now() >= ctx.deadline {
            break;
        }
        if tried.contains(&target.name) {
            continue;
        }
        if !within_boundary(&ctx.feature.boundary, target) {
            tracing::error!(request_id = %ctx.id, feature = %ctx.feature.name, endpoint = %target.name, "refusing an endpoint outside the feature's data boundary");
            state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::BoundaryRefused);
            continue;
        }
        if let Some(why) = target.upstream.missing_credential() {
            state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::NoCredentials);
            tried.push(target.name.clone());
            failures.push((target.name.clone(), AttemptFailure::no_credentials(why)));
            continue;
        }
        // The retry budget bounds load on what is failing; capacity relief and fallback to a
        // healthy tier are never refused.
        if attempts > 0
            && planned.spilled.is_none()
            && (planned.last_resort || target.health.failing())
            && !state.budget().try_retry(Instant::now(), &ctx.retry_budget)
        {
            state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::SkippedRetryBudget);
            budget_refused = true;
            continue;
        }
        let hide_usage = force_usage(&mut req, &planned, client_wants_usage, &client_stream_options);
        tried.push(target.name.clone());
        attempts += 1;
        let finish_a = new_finish(state, &ctx, &planned, estimate, attempts);
        // A recovery probe into a still-slow endpoint is cut at the slow mark: a probe must not
        // cost its user the whole attempt timeout.
        let cut = target.health.probing().then(|| target.health.slow_after(req.stream)).flatten().map(|(d, _)| d);
        let hedge_to = plan[i..]
            .iter()
            .find(|next| {
                !next.last_resort
                    && !tried.contains(&next.target.name)
                    && within_boundary(&ctx.feature.boundary, &next.target)
                    && next.target.upstream.missing_credential().is_none()
            })
            .cloned()
            .zip(hedging.and_then(|h| hedge_delay(h, target)));
        let mut req_b = hedge_to.as_ref().map(|_| req.clone());
        let stream = req.stream;
        let mut fut_a = Box::pin(watch_slow(target, stream, &state.metrics, finish_a.attempt_started, async {
            attempt::run(target, &mut req, canonical.as_ref(), &ctx, cut).await
        }));
        // Without a hedge, or when the attempt ends before the hedge is due, one attempt it is.
        let early = match &hedge_to {
            None => Some(fut_a.as_mut().await),
            Some((_, delay)) => tokio::select! {
                r = fut_a.as_mut() => Some(r),
                () = tokio::time::sleep(*delay) => None,
            },
        };
        let racing = match (&early, &hedge_to) {
            (None, Some((next, _))) => start_hedge(state, &ctx, next),
            _ => None,
        };
        let raced = match (early, &hedge_to, req_b.as_mut(), racing) {
            (Some(r), _, _, _) => {
                drop(fut_a);
                vec![(planned.clone(), finish_a, r)]
            }
            (None, Some((next, _)), Some(req_b), Some(racing)) => {
                // The first token is late: race the next tier. The first to produce one wins;
                // the other is dropped, which closes its upstream request.
                state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::HedgeStarted);
                tried.push(next.target.name.clone());
                attempts += 1;
                let finish_b = new_finish(state, &ctx, next, estimate, attempts);
                let next_target = &next.target;
                let mut fut_b =
                    Box::pin(watch_slow(next_target, stream, &state.metrics, finish_b.attempt_started, async {
                        attempt::run(next_target, req_b, canonical.as_ref(), &ctx, None).await
                    }));
                let (mut a, mut b) = (None, None);
                let won = loop {
                    tokio::select! {
                        r = fut_a.as_mut(), if a.is_none() => {
                            if r.0.is_ok() { break Some((true, r)) }
                            a = Some(r);
                        }
                        r = fut_b.as_mut(), if b.is_none() => {
                            if r.0.is_ok() { break Some((false, r)) }
                            b = Some(r);
                        }
                    }
                    if a.is_some() && b.is_some() {
                        break None;
                    }
                };
                drop((fut_a, fut_b, racing));
                match won {
                    Some((true, r)) => {
                        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::HedgeLost);
                        vec![(planned.clone(), finish_a, r)]
                    }
                    Some((false, r)) => {
                        state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::HedgeLost);
                        vec![(next.clone(), finish_b, r)]
                    }
                    // The loop only ends without a winner once both attempts have finished.
                    None => match (a, b) {
                        (Some(a), Some(b)) => vec![(planned.clone(), finish_a, a), (next.clone(), finish_b, b)],
                        _ => Vec::new(),
                    },
                }
            }
            // The hedge is due but its bound says no: keep waiting for the one attempt.
            (None, _, _, _) => {
                let r = fut_a.as_mut().await;
                drop(fut_a);
                vec![(planned.clone(), finish_a, r)]
            }
        };
        for (p, mut finish, (result, counted)) in raced {
            let t = &p.target;
            finish.counted_in_flight = counted;
            match result {
                Ok(reply) => {
                    let up = &t.upstream;
                    // Only the tier the usage was forced for hides it (a hedge winner is another).
                    let hide = hide_usage && Arc::ptr_eq(t, target);
                    let mode = stream::Mode::new(
                        req.protocol,
                        up.wire_for(req.protocol),
                        up.model(),
                        include_usage(&req, canonical.as_ref()),
                        canonical.as_ref().map_or(&[], |c| c.namespaces.as_slice()),
                        hide,
                        ctx.max_frame,
                    );
                    finish.in_flight = in_flight.take();
                    return commit(reply, mode, finish, &ctx);
                }
                Err(f) if f.may_fall_back() => {
                    tracing::warn!(
                        request_id = %ctx.id, feature = %ctx.feature.name, endpoint = %t.name,
                        kind = ?f.kind, outcome = f.outcome.as_str(), detail = %f.detail, "attempt failed; falling back"
                    );
                    state.metrics.attempt(&ctx.feature.name, &t.name, f.outcome);
                    if f.kind.blames_endpoint() {
                        record_failure(state, t, &finish, &f);
                    }
                    // A throttled PT endpoint is full, not broken: re-send to its on-demand twin
                    // right away.
                    if f.kind == FailureKind::Throttled
                        && let (Some(pool), Some(twin)) = (&p.pool, &p.spill_to)
                    {
                        pool.spilled(Spill::Throttled, estimate);
                        state.metrics.spilled(&pool.name, Spill::Throttled);
                        plan.insert(i.min(plan.len()), Planned::spill(twin.clone(), Spill::Throttled));
                    }
                    drop(finish);
                    failures.push((t.name.clone(), f));
                }
                Err(f) => {
                    // The request itself is at fault: every endpoint would refuse it the same way.
                    let outcome = if f.kind == FailureKind::ContentFiltered {
                        Outcome::ContentFiltered
                    } else {
                        Outcome::BadRequest
                    };
                    let attempts = finish.attempts;
                    finish.done(outcome);
                    let mut resp = refusal(f, t.upstream.wire_for(req.protocol), req.protocol);
                    explain(resp.headers_mut(), &t.name, attempts);
                    return resp;
                }
            }
        }
    }
    all_failed(state, &ctx, req.protocol, failures, attempts, budget_refused)
}

/// Starts a hedge if the feature's hedge bound has room, and — when the hedge goes to a failing
/// endpoint — the retry budget too.
fn start_hedge(state: &AppState, ctx: &RequestCtx, next: &Planned) -> Option<hedge::Racing> {
    let Some(racing) = ctx.feature.load.try_hedge(ctx.feature.hedge_max_share) else {
        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::HedgeRefused);
        return None;
    };
    if next.target.health.failing() && !state.budget().try_retry(Instant::now(), &ctx.retry_budget) {
        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::SkippedRetryBudget);
        return None;
    }
    Some(racing)
}

/// Tells the endpoint's breaker about a failed attempt that may fall back.
fn record_failure(state: &AppState, t: &EndpointTarget, finish: &Finish, f: &AttemptFailure) {
    // An attempt abandoned for want of a first token, after the breaker already counted it as
    // slow, is one slow attempt, not also an error.
    let slow_timeout = f.outcome == Outcome::Timeout && finish.counted_in_flight;
    let o = Observation {
        failed: matches!(f.kind, FailureKind::Unavailable | FailureKind::Auth) && !slow_timeout,
        throttled: f.kind == FailureKind::Throttled,
        ttft: None,
        total: finish.attempt_started.elapsed(),
        max_gap: None,
        output_tokens: None,
    };
    let class = if f.kind == FailureKind::Throttled { Outcome::Throttled.class() } else { f.outcome.class() };
    t.health.record(&o, class, finish.counted_in_flight, &state.metrics);
}

/// Asks a PT endpoint for stream usage the OpenAI client did not ask for, and restores the
/// client's own `stream_options` for other endpoints. Returns whether the usage chunk must be
/// hidden from the client.
fn force_usage(
    req: &mut inbound::Request,
    planned: &Planned,
    client_wants_usage: bool,
    original: &Option<serde_json::Value>,
) -> bool {
    if req.protocol != Protocol::OpenAi || !req.stream || client_wants_usage {
        return false;
    }
    let force = planned.pool.is_some() && planned.target.upstream.wire.passes_through(Protocol::OpenAi);
    if force {
        let mut options = original.clone().filter(|o| o.is_object()).unwrap_or_else(|| serde_json::json!({}));
        options["include_usage"] = true.into();
        req.body.insert("stream_options".into(), options);
    } else {
        match original {
            Some(o) => req.body.insert("stream_options".into(), o.clone()),
            None => req.body.remove("stream_options"),
        };
    }
    force
}

fn new_finish(state: &AppState, ctx: &RequestCtx, p: &Planned, estimate: u64, attempts: usize) -> Finish {
    let charge = p.pool.as_ref().map(|pool| (pool.clone(), pool.charge(estimate)));
    Finish {
        metrics: state.metrics.clone(),
        feature: ctx.feature.name.clone(),
        target: p.target.clone(),
        request_id: ctx.id.clone(),
        started: ctx.started,
        attempt_started: Instant::now(),
        ttft: None,
        counted_in_flight: false,
        max_gap: None,
        usage: None,
        charge,
        spilled: p.spilled,
        in_flight: None,
        output_avg: ctx.feature.output_avg.clone(),
        attempts,
        feedback: state.feedback.clone(),
    }
}

/// Whether an endpoint's region is inside the feature's data boundary. The planner only ever
/// proposes endpoints that are (validation proves it); this re-check at send time is the last
/// line, so a bug elsewhere cannot move data across a boundary.
fn within_boundary(boundary: &[String], target: &EndpointTarget) -> bool {
    boundary.is_empty()
        || target
            .spec
            .region
            .as_deref()
            .and_then(spillway_api::config::region_group)
            .is_some_and(|g| boundary.iter().any(|b| b == g))
}

/// When to race the next tier: a fixed time, or the endpoint's own first-token percentile
/// (no hedge until it has enough samples to know it).
fn hedge_delay(h: &HedgeAfter, target: &EndpointTarget) -> Option<std::time::Duration> {
    match h {
        HedgeAfter::Millis(ms) => Some(std::time::Duration::from_millis(*ms)),
        HedgeAfter::Percentile(p) => {
            let q = p.strip_prefix('p').and_then(|n| n.parse::<f64>().ok())? / 100.0;
            target.health.ttft_quantile(q)
        }
    }
}

/// Whether the caller's latest turn hands back tool results.
fn ends_with_tool_results(req: &inbound::Request) -> bool {
    if req.protocol == Protocol::Responses {
        let last = req.body.get("input").and_then(|i| i.as_array()).and_then(|i| i.last());
        return last.and_then(|i| i.get("type")).and_then(|t| t.as_str()) == Some("function_call_output");
    }
    let Some(last) = req.body.get("messages").and_then(|m| m.as_array()).and_then(|m| m.last()) else { return false };
    last.get("role").and_then(|r| r.as_str()) == Some("tool")
        || last
            .get("content")
            .and_then(|c| c.as_array())
            .is_some_and(|blocks| blocks.iter().any(|b| b.get("type").and_then(|t| t.as_str()) == Some("tool_result")))
}

/// Runs an attempt; if its endpoint's breaker has a slow rule for its kind (first token for a
/// stream, whole reply otherwise) and the attempt is still waiting past it, tells the breaker
/// right then instead of when the attempt finally ends. The flag says whether it did.
async fn watch_slow<T>(
    target: &EndpointTarget,
    stream: bool,
    metrics: &Metrics,
    started: Instant,
    attempt: impl std::future::Future<Output = T>,
) -> (T, bool) {
    let Some((after, mark)) = target.health.slow_after(stream) else { return (attempt.await, false) };
    tokio::pin!(attempt);
    // Biased: an attempt cut at the slow mark (a probe) is counted slow, not as an error.
    tokio::select! {
        biased;
        () = tokio::time::sleep_until(started + after) => {
            target.health.record_slow_in_flight(mark, metrics);
            (attempt.await, true)
        }
        r = &mut attempt => (r, false),
    }
}

fn include_usage(req: &inbound::Request, canonical: Option<&canonical::Request>) -> bool {
    canonical.map_or(req.protocol == Protocol::Anthropic, |c| c.include_usage)
}

/// A provider's refusal of the request, in the caller's protocol: as-is when the protocols
/// match, else its message re-wrapped.
fn refusal(f: AttemptFailure, wire: Wire, client: Protocol) -> Response<ProxyBody> {
    let (status, body) = f.reply.unwrap_or((StatusCode::BAD_REQUEST, Default::default()));
    let body = if wire.replies_natively(client) {
        body
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = v.pointer("/error/message").or(v.get("message")).and_then(|m| m.as_str()).unwrap_or(&f.detail);
        let code = v.pointer("/error/code").and_then(|m| m.as_str());
        let out = match client {
            Protocol::OpenAi | Protocol::Responses => {
                openai::error_body(openai::error_type(status.as_u16()), code, message, None)
            }
            Protocol::Anthropic => anthropic::error_body(anthropic::error_type(status.as_u16()), message),
        };
        out.to_string().into()
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn commit(reply: Reply, mode: stream::Mode, mut finish: Finish, ctx: &RequestCtx) -> Response<ProxyBody> {
    let (endpoint, attempts, spilled) = (finish.target.name.clone(), finish.attempts, finish.spilled);
    let dropped = match &reply {
        Reply::Complete { dropped, .. } | Reply::Stream { dropped, .. } => dropped.join(", "),
    };
    if !dropped.is_empty() {
        finish.metrics.dropped(&finish.feature, &endpoint);
    }
    let mut resp = match reply {
        // A whole reply has no first token of its own: it is judged by its total time.
        Reply::Complete { status, content_type, body, usage, .. } => {
            finish.usage = usage;
            finish.done(Outcome::Ok);
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            r
        }
        Reply::Stream { first, rest, .. } => {
            finish.ttft = Some(finish.attempt_started.elapsed());
            finish.metrics.ttft(&finish.feature, &endpoint, ctx.started.elapsed());
            let body =
                stream::GuardedStream::new(mode, first, rest, ctx.deadline, finish, ctx.max_frame, ctx.cut.clone());
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    explain(resp.headers_mut(), &endpoint, attempts);
    // Names the client sent, kept to field-like ones by the decoder: always a valid value.
    if let Ok(v) = HeaderValue::from_str(&dropped)
        && !dropped.is_empty()
    {
        resp.headers_mut().insert("x-spillway-dropped", v);
    }
    if let Some(s) = spilled {
        resp.headers_mut().insert("x-spillway-spilled", HeaderValue::from_static(s.as_str()));
    }
    resp
}

/// The caller's output limit, if any.
fn max_output(req: &inbound::Request) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| req.body.get(*k).and_then(|v| v.as_u64()))
}

/// `x-spillway-endpoint` / `x-spillway-attempts`: which endpoint answered, after how many tries.
fn explain(headers: &mut HeaderMap, endpoint: &str, attempts: usize) {
    if let Ok(v) = HeaderValue::from_str(endpoint) {
        headers.insert("x-spillway-endpoint", v);
    }
    headers.insert("x-spillway-attempts", HeaderValue::from(attempts));
}

fn all_failed(
    state: &AppState,
    ctx: &RequestCtx,
    protocol: Protocol,
    failures: Vec<(Arc<str>, AttemptFailure)>,
    attempts: usize,
    budget_refused: bool,
) -> Response<ProxyBody> {
    let tried = failures.len();
    let mut summary = failures.iter().map(|(ep, f)| format!("`{ep}`: {}", f.detail)).collect::<Vec<_>>().join("; ");
    if budget_refused {
        summary.push_str("; endpoints that are failing were not retried: the sidecar's retry budget is spent");
    }
    let all_throttled = tried > 0 && failures.iter().all(|(_, f)| f.kind == FailureKind::Throttled);
    // Every endpoint said when it will take traffic again: the caller's own retry after that
    // wait is the right thing. Otherwise spillway already tried everything it could, and an
    // SDK's automatic retries would only multiply the failure.
    let worth_retrying = all_throttled && failures.iter().all(|(_, f)| f.retry_after.is_some());
    let out_of_time = Instant::now() >= ctx.deadline;
    let total = ctx.feature.hierarchy.len();
    let feature = &ctx.feature.name;
    // No endpoint could carry the request as it is: the caller's to change, not to retry.
    let all_unsupported = tried > 0 && failures.iter().all(|(_, f)| f.kind == FailureKind::Unsupported);
    let mut err = if all_unsupported {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "unsupported_by_every_endpoint",
            message: format!("feature `{feature}`: no endpoint can carry this request ({summary})"),
            param: None,
            retry_after_s: None,
        }
    } else if out_of_time {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "timeout_error",
            code: "deadline_exceeded",
            message: format!(
                "feature `{feature}`: the deadline of {} ms passed after {tried} of {total} endpoints failed ({summary})",
                ctx.feature.deadline.as_millis()
            ),
            param: None,
            retry_after_s: None,
        }
    } else if all_throttled {
        let wait = failures.iter().filter_map(|(_, f)| f.retry_after).min();
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            code: "all_endpoints_throttled",
            message: format!("feature `{feature}`: every endpoint is throttling ({summary})"),
            param: None,
            retry_after_s: Some(wait.map_or(1, |w| w.as_secs_f64().ceil().max(1.0) as u64)),
        }
    } else {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "service_unavailable_error",
            code: "all_endpoints_failed",
            message: format!("feature `{feature}`: {tried} endpoint(s) tried, all failed ({summary})"),
            param: None,
            retry_after_s: None,
        }
    };
    if err.message.len() > 4096 {
        let cut = (0..=4096).rev().find(|&i| err.message.is_char_boundary(i)).unwrap_or(0);
        err.message.truncate(cut);
    }
    state.metrics.request(feature, err.code);
    tracing::warn!(request_id = %ctx.id, feature = %feature, attempts, code = err.code, "request failed");
    let mut resp = err.into_response(protocol);
    resp.headers_mut().insert("x-spillway-attempts", HeaderValue::from(attempts));
    if !worth_retrying {
        resp.headers_mut().insert("x-should-retry", HeaderValue::from_static("false"));
    }
    resp
}

/// `req_` and 24 random hex digits. Written digit by digit: `format!` cost a microsecond here.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (hi, lo) = (fastrand::u64(..), fastrand::u32(..));
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    let digits =
        (0..16).rev().map(|i| (hi >> (i * 4)) & 0xf).chain((0..8).rev().map(|i| u64::from(lo >> (i * 4)) & 0xf));
    id.extend(digits.map(|d| char::from(HEX[d as usize])));
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_req_and_24_hex_digits_and_differ() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        for id in [&a, &b] {
            let hex = id.strip_prefix("req_").unwrap_or_else(|| panic!("{id}"));
            assert_eq!(hex.len(), 24, "{id}");
            assert!(hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
        }
        assert_ne!(a, b);
        fastrand::seed(7);
        let seeded = super::new_request_id();
        fastrand::seed(7);
        let expected = format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
        assert_eq!(seeded, expected, "the same digits format! would write");
    }
}
