//! The request path: resolve the feature, walk its hierarchy, commit the first good reply.
//!
//! # Layout
//!
//! - this module: feature resolution, the fallback loop, the final response and its headers;
//! - [`plan`]: which endpoints this request may try, in order (last resorts at the end);
//! - [`hedge`]: a late first token raced against the next tier, within the feature's bound;
//! - [`attempt`]: one endpoint, up to the commit point;
//! - [`finish`]: a request's end, recorded once;
//! - [`reply`]: what the caller gets — the committed reply, a refusal, or one error naming every
//!   attempt;
//! - [`stream`]: the committed stream's body, which always ends well-formed;
//! - [`unary`]: operations answered with one body (token counting, embeddings).

mod attempt;
mod finish;
mod hedge;
pub mod plan;
mod reply;
mod stream;
pub mod unary;

use crate::AppState;
use crate::body::ProxyBody;
use crate::canonical;
use crate::capacity::Spill;
use crate::error::ApiError;
use crate::headers;
use crate::health::breaker::Observation;
use crate::inbound;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::protocol::Protocol;
use crate::routing::{EndpointTarget, FeatureRoute, RoutingTable};
use crate::upstream::failure::{AttemptFailure, FailureKind};
pub(crate) use finish::record_end;
use finish::{Finish, new_finish};
use http::{HeaderMap, HeaderValue, Response};
use plan::Planned;
use reply::{all_failed, commit, explain, refusal, shutting_down};
use spillway_api::config::RetryBudget;
use std::sync::Arc;
use tokio::time::Instant;

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

impl RequestCtx {
    fn new(state: &AppState, table: &RoutingTable, feature: Arc<FeatureRoute>, id: String, started: Instant) -> Self {
        RequestCtx {
            id,
            deadline: started + feature.deadline,
            feature,
            retry_budget: table.retry_budget.clone(),
            started,
            max_frame: state.max_upstream_frame_bytes,
            cut: state.cut.clone(),
        }
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
        Ok(bytes) => protocol.api().parse(&bytes, &parts.headers),
        Err(e) => Err(e),
    };
    let mut resp = match parsed {
        Err(e) => {
            record_end(state, &id, &feature_label(&table, &parts.headers), "-", 0, "invalid_request", started);
            e.into_response(protocol)
        }
        Ok(request) => match resolve_feature(&table, &parts.headers, &request.model) {
            Err(e) => {
                record_end(state, &id, &Arc::from("-"), "-", 0, "unknown_feature", started);
                e.into_response(protocol)
            }
            Ok(feature) => {
                let ctx = RequestCtx::new(state, &table, feature, id.clone(), started);
                tokio::select! {
                    biased;
                    resp = route(state, request, ctx) => resp,
                    () = state.cut.cancelled() => {
                        record_end(state, &id, &feature_label(&table, &parts.headers), "-", 0, "shutdown", started);
                        shutting_down().into_response(protocol)
                    }
                }
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(headers::REQUEST_ID, v);
    }
    resp
}

/// The feature comes from the header, else from `model` when it names one.
fn resolve_feature(table: &RoutingTable, headers: &HeaderMap, model: &str) -> Result<Arc<FeatureRoute>, ApiError> {
    if table.version.is_empty() {
        // A managed sidecar before its first snapshot: retryable, unlike an unknown feature.
        return Err(ApiError::retry_shortly(
            "not_ready",
            "spillway has no routing config yet (waiting for the control plane); retry shortly",
        ));
    }
    let known = || table.feature_names().join(", ");
    if let Some(h) = headers.get(headers::FEATURE) {
        let name = h.to_str().unwrap_or_default();
        return table.features.get(name).cloned().ok_or_else(|| {
            ApiError::not_found(
                "unknown_feature",
                format!("unknown feature `{name}` in {}; known features: {}", headers::FEATURE, known()),
            )
        });
    }
    table.features.get(model).cloned().ok_or_else(|| {
        ApiError::not_found(
            "unknown_feature",
            format!(
                "model `{model}` is not a feature, and no {} header was sent; known features: {}",
                headers::FEATURE,
                known()
            ),
        )
    })
}

fn feature_label(table: &RoutingTable, headers: &HeaderMap) -> Arc<str> {
    let known = headers.get(headers::FEATURE).and_then(|h| h.to_str().ok()).and_then(|f| table.features.get(f));
    known.map_or_else(|| Arc::from("-"), |f| f.name.clone())
}

async fn route(state: &AppState, mut req: inbound::Request, ctx: RequestCtx) -> Response<ProxyBody> {
    // Translate only when some endpoint speaks another protocol than the caller; a request
    // that cannot be translated is the caller's to fix, before anything is sent.
    let canonical =
        if ctx.feature.hierarchy.iter().any(|t| !t.upstream.wire_for(req.protocol).passes_through(req.protocol)) {
            match req.protocol.api().decode(&req.body) {
                Ok(c) => Some(c),
                Err(e) => {
                    record_end(state, &ctx.id, &ctx.feature.name, "-", 0, "invalid_request", ctx.started);
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
    let estimate = crate::capacity::estimate(req.body_len, req.max_output, ctx.feature.output_avg.get());
    let mut plan = plan::plan(&ctx.feature, estimate, &state.metrics);
    // A hedge races a late *first token*: only a stream has one. A whole reply is bounded by the
    // attempt timeout and judged by the breaker on its total time.
    let hedging = ctx
        .feature
        .hedge
        .as_ref()
        .filter(|_| req.stream && (ctx.feature.hedge_tool_results || !req.hands_back_tool_results));
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
        target.health.sent();
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
            .zip(hedging.and_then(|h| hedge::delay(h, target)));
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
            (None, Some((next, _))) => hedge::start(state, &ctx, next),
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
                next.target.health.sent();
                let finish_b = new_finish(state, &ctx, next, estimate, attempts);
                let next_target = &next.target;
                let mut fut_b =
                    Box::pin(watch_slow(next_target, stream, &state.metrics, finish_b.attempt_started, async {
                        attempt::run(next_target, req_b, canonical.as_ref(), &ctx, None).await
                    }));
                let won = hedge::race(fut_a.as_mut(), fut_b.as_mut()).await;
                drop((fut_a, fut_b, racing));
                match won {
                    hedge::Race::First(r) => {
                        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::HedgeLost);
                        vec![(planned.clone(), finish_a, r)]
                    }
                    hedge::Race::Second(r) => {
                        state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::HedgeLost);
                        vec![(next.clone(), finish_b, r)]
                    }
                    hedge::Race::BothFailed(a, b) => vec![(planned.clone(), finish_a, a), (next.clone(), finish_b, b)],
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
                        canonical.as_ref(),
                        hide,
                        ctx.max_frame,
                    );
                    finish.in_flight = in_flight.take();
                    return commit(reply, mode, finish, &ctx);
                }
                Err(f) if f.may_fall_back() => {
                    tracing::warn!(
                        request_id = %ctx.id, feature = %ctx.feature.name, endpoint = %t.name,
                        kind = ?f.kind, origin = ?f.origin(), outcome = f.outcome.as_str(), detail = %f.detail, "attempt failed; falling back"
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
                    explain(resp.headers_mut(), t, attempts);
                    return resp;
                }
            }
        }
    }
    all_failed(state, &ctx, req.protocol, failures, attempts, budget_refused)
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
    if !req.protocol.api().usage_is_optional() || !req.stream || client_wants_usage {
        return false;
    }
    let force = planned.pool.is_some() && planned.target.upstream.wire_for(req.protocol).passes_through(req.protocol);
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

/// `req_` and 24 random hex digits. Written digit by digit: `format!` cost a microsecond here.
pub(crate) fn new_request_id() -> String {
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
