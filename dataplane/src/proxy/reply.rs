//! What the caller gets: a committed reply with the headers that explain it, a provider's
//! refusal in the caller's API, or one error naming every attempt when none could answer.

use super::attempt::Reply;
use super::finish::Finish;
use super::{RequestCtx, stream};
use crate::AppState;
use crate::body::{ProxyBody, full};
use crate::error::ApiError;
use crate::headers;
use crate::outcome::Outcome;
use crate::protocol::{Protocol, Wire, openai};
use crate::routing::EndpointTarget;
use crate::upstream::failure::{AttemptFailure, FailureKind};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::time::Instant;

/// What a request still in flight when the shutdown grace ends gets: retryable, elsewhere.
pub(super) fn shutting_down() -> ApiError {
    ApiError::retry_shortly(
        "shutting_down",
        "the spillway sidecar is shutting down and its grace period ended; retry the request",
    )
}

/// The error event a stream still open when the shutdown grace ends is closed with.
pub const SHUTDOWN_MESSAGE: &str = "the spillway sidecar is shutting down and its grace period ended mid-stream";

/// A provider's refusal of the request, in the caller's protocol: as-is when the protocols
/// match, else its message re-wrapped.
pub(super) fn refusal(f: AttemptFailure, wire: Wire, client: Protocol) -> Response<ProxyBody> {
    let (status, body) = f.reply.unwrap_or((StatusCode::BAD_REQUEST, Default::default()));
    let body = if wire.replies_natively(client) {
        body
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = v.pointer("/error/message").or(v.get("message")).and_then(|m| m.as_str()).unwrap_or(&f.detail);
        let code = v.pointer("/error/code").and_then(|m| m.as_str());
        let out = client.api().error_body(status, openai::error_type(status.as_u16()), code, message, None);
        out.to_string().into()
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(super) fn commit(reply: Reply, mode: stream::Mode, mut finish: Finish, ctx: &RequestCtx) -> Response<ProxyBody> {
    let (target, attempts, spilled) = (finish.target.clone(), finish.attempts, finish.spilled);
    let endpoint = &target.name;
    let dropped = match &reply {
        Reply::Complete { dropped, .. } | Reply::Stream { dropped, .. } => dropped.join(", "),
    };
    if !dropped.is_empty() {
        finish.metrics.dropped(&finish.feature, endpoint);
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
            finish.metrics.ttft(&finish.feature, endpoint, ctx.started.elapsed());
            let body =
                stream::GuardedStream::new(mode, first, rest, ctx.deadline, finish, ctx.max_frame, ctx.cut.clone());
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    explain(resp.headers_mut(), &target, attempts);
    // Names the client sent, kept to field-like ones by the decoder: always a valid value.
    if let Ok(v) = HeaderValue::from_str(&dropped)
        && !dropped.is_empty()
    {
        resp.headers_mut().insert(headers::DROPPED, v);
    }
    if let Some(s) = spilled {
        resp.headers_mut().insert(headers::SPILLED, HeaderValue::from_static(s.as_str()));
    }
    resp
}

/// `x-spillway-endpoint` / `x-spillway-attempts`: which endpoint answered, after how many tries.
pub(super) fn explain(headers: &mut HeaderMap, endpoint: &EndpointTarget, attempts: usize) {
    if let Some(v) = &endpoint.name_header {
        headers.insert(crate::headers::ENDPOINT, v.clone());
    }
    headers.insert(crate::headers::ATTEMPTS, HeaderValue::from(attempts));
}

pub(super) fn all_failed(
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
    super::finish::record_end(state, &ctx.id, feature, "-", attempts, err.code, ctx.started);
    tracing::warn!(request_id = %ctx.id, feature = %feature, attempts, code = err.code, "request failed");
    let mut resp = err.into_response(protocol);
    resp.headers_mut().insert(headers::ATTEMPTS, HeaderValue::from(attempts));
    if !worth_retrying {
        resp.headers_mut().insert(headers::SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    resp
}
