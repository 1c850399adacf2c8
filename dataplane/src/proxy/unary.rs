//! Operations answered with one JSON body: token counting and embeddings.
//!
//! They walk the feature's hierarchy like a chat request — data boundary, credentials,
//! fallback on any failure another endpoint may not share, the deadline, errors in the caller's
//! format, the retry budget before a failing endpoint — without what only generation needs: no
//! streams, hedges or PT charges (neither operation generates tokens). They read the breakers
//! (an OPEN endpoint is tried last) but do not feed them: a breaker judges an endpoint's generation, and a millisecond count or an
//! embedding call says nothing about its first-token time.

use super::finish::record_end;
use super::{RequestCtx, all_failed, attempt, explain, new_request_id, refusal, resolve_feature, within_boundary};
use crate::AppState;
use crate::body::{ProxyBody, full};
use crate::canonical;
use crate::error::ApiError;
use crate::inbound;
use crate::outcome::Outcome;
use crate::protocol::embeddings::{self, Family};
use crate::protocol::{Protocol, Wire, anthropic, count_tokens};
use crate::routing::EndpointTarget;
use crate::upstream::failure::{self, AttemptFailure};
use crate::upstream::provider::Operation;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// An operation answered with one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// `POST /v1/embeddings` (OpenAI).
    Embeddings,
}

impl Unary {
    fn protocol(self) -> Protocol {
        match self {
            Unary::CountTokens => Protocol::Anthropic,
            Unary::Embeddings => Protocol::OpenAi,
        }
    }

    fn operation(self) -> Operation {
        match self {
            Unary::CountTokens => Operation::CountTokens,
            Unary::Embeddings => Operation::Embed,
        }
    }
}

/// The caller's request, checked, with what the translations need of it.
struct Call {
    body: Map<String, Value>,
    headers: HeaderMap,
    /// Token counting off Anthropic: the conversation in canonical form.
    canonical: Option<canonical::Request>,
    /// Embeddings: the texts and options.
    embed: Option<embeddings::Request>,
}

pub async fn serve(state: &AppState, req: http::Request<hyper::body::Incoming>, op: Unary) -> Response<ProxyBody> {
    let started = Instant::now();
    let id = new_request_id();
    let protocol = op.protocol();
    let (parts, body) = req.into_parts();
    let table = state.routing.load();
    let checked = match inbound::read_body(&parts.headers, body, state.max_body_bytes, state.body_timeout).await {
        Ok(bytes) => check(op, &bytes, &parts.headers),
        Err(e) => Err(e),
    };
    let mut resp = match checked {
        Err(e) => {
            record_end(state, &id, &Arc::from("-"), "-", 0, "invalid_request", started);
            e.into_response(protocol)
        }
        Ok((model, call)) => match resolve_feature(&table, &parts.headers, &model) {
            Err(e) => {
                record_end(state, &id, &Arc::from("-"), "-", 0, "unknown_feature", started);
                e.into_response(protocol)
            }
            Ok(feature) => {
                let ctx = RequestCtx::new(state, &table, feature, id.clone(), started);
                walk(state, op, &call, &ctx).await
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(crate::headers::REQUEST_ID, v);
    }
    resp
}

/// Reads the feature name and what the operation needs; only what routing and translation
/// need is checked, the rest is the provider's to judge.
fn check(op: Unary, bytes: &[u8], headers: &HeaderMap) -> Result<(String, Call), ApiError> {
    let body = inbound::json_object(bytes)?;
    let model = inbound::model(&body)?;
    let mut call = Call { body, headers: HeaderMap::new(), canonical: None, embed: None };
    match op {
        Unary::CountTokens => {
            inbound::check_messages(call.body.get("messages"), &["user", "assistant", "system"])?;
            for name in ["anthropic-version", "anthropic-beta"] {
                if let Some(v) = headers.get(name) {
                    call.headers.insert(name, v.clone());
                }
            }
            call.canonical = anthropic::decode_request(&call.body).ok();
        }
        Unary::Embeddings => {
            let e = embeddings::decode(&call.body)
                .map_err(|(param, message)| ApiError::invalid_request("invalid_value", Some(param), message))?;
            call.embed = Some(e);
        }
    }
    Ok((model, call))
}

/// Tries the hierarchy in order, endpoints whose breaker holds them back last.
async fn walk(state: &AppState, op: Unary, call: &Call, ctx: &RequestCtx) -> Response<ProxyBody> {
    let protocol = op.protocol();
    let mut order: Vec<&Arc<EndpointTarget>> = ctx.feature.hierarchy.iter().collect();
    order.sort_by_key(|t| t.health.failing());
    let mut failures: Vec<(Arc<str>, AttemptFailure)> = Vec::new();
    let mut attempts = 0;
    // The sidecar's retry budget bounds these retries too: a fallback to an endpoint that is
    // failing adds load to it, whatever the operation.
    state.budget().request(Instant::now(), &ctx.retry_budget);
    let mut budget_refused = false;
    for target in order {
        if Instant::now() >= ctx.deadline {
            break;
        }
        if !within_boundary(&ctx.feature.boundary, target) {
            state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::BoundaryRefused);
            continue;
        }
        if attempts > 0 && target.health.failing() && !state.budget().try_retry(Instant::now(), &ctx.retry_budget) {
            state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::SkippedRetryBudget);
            budget_refused = true;
            continue;
        }
        attempts += 1;
        match attempt(op, call, target, ctx).await {
            Ok(body) => {
                state.metrics.attempt(&ctx.feature.name, &target.name, Outcome::Ok);
                record_end(
                    state,
                    &ctx.id,
                    &ctx.feature.name,
                    &target.name,
                    attempts,
                    Outcome::Ok.as_str(),
                    ctx.started,
                );
                let mut r = Response::new(full(body));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                explain(r.headers_mut(), target, attempts);
                return r;
            }
            Err(f) if f.may_fall_back() => {
                tracing::warn!(request_id = %ctx.id, feature = %ctx.feature.name, endpoint = %target.name,
                    kind = ?f.kind, origin = ?f.origin(), outcome = f.outcome.as_str(), detail = %f.detail, "attempt failed; falling back");
                state.metrics.attempt(&ctx.feature.name, &target.name, f.outcome);
                if f.kind.blames_endpoint() && f.origin() == failure::Origin::Upstream {
                    target.health.note_failure();
                }
                failures.push((target.name.clone(), f));
            }
            Err(f) => {
                let outcome = if f.kind == failure::FailureKind::ContentFiltered {
                    Outcome::ContentFiltered
                } else {
                    Outcome::BadRequest
                };
                state.metrics.attempt(&ctx.feature.name, &target.name, outcome);
                record_end(state, &ctx.id, &ctx.feature.name, &target.name, attempts, outcome.as_str(), ctx.started);
                let wire = target.upstream.wire_for(protocol);
                let mut r = refusal(f, wire, protocol);
                explain(r.headers_mut(), target, attempts);
                return r;
            }
        }
    }
    all_failed(state, ctx, protocol, failures, attempts, budget_refused)
}

/// One endpoint: the body (or bodies) it takes, sent within the attempt's bound, its replies
/// turned into the caller's.
async fn attempt(op: Unary, call: &Call, target: &EndpointTarget, ctx: &RequestCtx) -> Result<Bytes, AttemptFailure> {
    let up = &target.upstream;
    let wire = up.wire_for(op.protocol());
    if let Some(why) = up.missing_credential() {
        return Err(AttemptFailure::no_credentials(why));
    }
    let by = ctx.feature.attempt_timeout.map_or(ctx.deadline, |t| (Instant::now() + t).min(ctx.deadline));
    match op {
        Unary::CountTokens => {
            if wire != Wire::Anthropic && call.canonical.is_none() {
                return Err(AttemptFailure::unsupported("the request could not be translated for this provider"));
            }
            let body = count_tokens::request(wire, &call.body, call.canonical.as_ref(), up.model())
                .map_err(AttemptFailure::unsupported)?;
            let headers = (wire == Wire::Anthropic || wire == Wire::VertexAnthropic).then_some(&call.headers);
            let reply = send(target, wire, op, body, headers, ctx, by).await?;
            let n = count_tokens::count(wire, &reply)
                .ok_or_else(|| AttemptFailure::unavailable(Outcome::Malformed, "the reply carries no token count"))?;
            Ok(Bytes::from(count_tokens::reply(n).to_string()))
        }
        Unary::Embeddings => {
            let family = Family::of(wire, up.model()).map_err(AttemptFailure::unsupported)?;
            let embed = call.embed.as_ref().ok_or_else(|| AttemptFailure::unsupported("no embeddings request"))?;
            let reply = if family == Family::OpenAi {
                send(target, wire, op, call.body.clone(), None, ctx, by).await?
            } else {
                let bodies = embeddings::requests(family, embed).map_err(AttemptFailure::unsupported)?;
                let sends = bodies.into_iter().map(|b| send(target, wire, op, b, None, ctx, by));
                let replies: Vec<Bytes> =
                    futures_util::future::join_all(sends).await.into_iter().collect::<Result<_, _>>()?;
                let (vectors, tokens) = embeddings::vectors(family, &replies).ok_or_else(|| {
                    AttemptFailure::unavailable(Outcome::Malformed, "the reply is not an embeddings reply of its API")
                })?;
                Bytes::from(embeddings::reply(&vectors, up.model(), tokens, embed.base64).to_string())
            };
            check_sizes(target, embed, &reply)?;
            Ok(reply)
        }
    }
}

/// An endpoint that declares its vectors' size must deliver it (unless the caller asked for
/// another): a vector of the wrong size would silently corrupt the caller's index.
fn check_sizes(target: &EndpointTarget, embed: &embeddings::Request, reply: &[u8]) -> Result<(), AttemptFailure> {
    let sizes = embeddings::sizes(reply)
        .ok_or_else(|| AttemptFailure::unavailable(Outcome::Malformed, "the reply is not an embeddings list"))?;
    let want = embed.dimensions.or(target.spec.dimensions.map(u64::from));
    if let Some(want) = want
        && let Some(bad) = sizes.iter().find(|s| **s as u64 != want)
    {
        return Err(AttemptFailure::unavailable(
            Outcome::Malformed,
            format!("the endpoint returned vectors of {bad} dimensions, not {want}"),
        ));
    }
    if let Some(n) = embed.texts.as_ref().map(Vec::len).filter(|n| *n != sizes.len()) {
        return Err(AttemptFailure::unavailable(
            Outcome::Malformed,
            format!("{} vectors came back for {n} inputs", sizes.len()),
        ));
    }
    Ok(())
}

/// Sends one body and reads the whole reply, within `by`.
async fn send(
    target: &EndpointTarget,
    wire: Wire,
    op: Unary,
    mut body: Map<String, Value>,
    headers: Option<&HeaderMap>,
    ctx: &RequestCtx,
    by: Instant,
) -> Result<Bytes, AttemptFailure> {
    let up = &target.upstream;
    let req = up.request(&mut body, wire, op.operation(), headers, &ctx.id).await?;
    let (_, body) = attempt::head(up, wire, req, by, ctx).await?;
    attempt::whole_body(body, by, ctx).await
}
