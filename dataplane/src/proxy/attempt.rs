//! One attempt at one endpoint, up to the point where the reply can be committed to the caller.
//!
//! Nothing reaches the caller until an attempt returns `Ok`: a non-streaming reply is read whole,
//! and a stream is held until its first real event arrives. So every failure up to then — a
//! refused connection, a 503, a stream that opens with 200 and dies — can still fall back.

use super::RequestCtx;
use crate::inbound::openai::ChatRequest;
use crate::routing::EndpointTarget;
use crate::sse::{self, EventKind, SseSplitter};
use crate::upstream::failure::{self, AttemptFailure};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, timeout_at};

/// An upstream error body is only read to classify it; a larger one is cut.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// A whole non-streaming reply is held in memory before it is sent on.
const REPLY_LIMIT: usize = 64 * 1024 * 1024;

pub enum Reply {
    /// A whole, well-formed non-streaming reply.
    Complete { status: StatusCode, content_type: HeaderValue, body: Bytes },
    /// A stream whose first event has arrived; `first` holds it (and any comments before it).
    Stream { content_type: HeaderValue, first: Bytes, splitter: SseSplitter, rest: Incoming },
}

pub async fn run(target: &EndpointTarget, req: &mut ChatRequest, ctx: &RequestCtx) -> Result<Reply, AttemptFailure> {
    let first_byte_by = ctx.feature.attempt_timeout.map_or(ctx.deadline, |t| (Instant::now() + t).min(ctx.deadline));
    let upstream_req = target.upstream.request(&mut req.body, &ctx.id);
    let resp = match timeout_at(first_byte_by, target.upstream.client.request(upstream_req)).await {
        Err(_) => return Err(timed_out(ctx, first_byte_by, "no response head")),
        Ok(Err(e)) => return Err(AttemptFailure::from_client_error(&e)),
        Ok(Ok(r)) => r,
    };
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        let body = match timeout_at(first_byte_by, Limited::new(body, ERROR_BODY_LIMIT).collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        return Err(failure::classify_openai(parts.status, &parts.headers, body));
    }
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
    if req.stream {
        if !content_type.to_str().unwrap_or_default().starts_with("text/event-stream") {
            return Err(AttemptFailure::unavailable(
                "malformed",
                format!("asked for a stream, got Content-Type {content_type:?}"),
            ));
        }
        first_event(content_type, body, first_byte_by, ctx).await
    } else {
        let body = match timeout_at(ctx.deadline, Limited::new(body, REPLY_LIMIT).collect()).await {
            Err(_) => return Err(timed_out(ctx, ctx.deadline, "reply body incomplete")),
            Ok(Err(e)) => return Err(AttemptFailure::unavailable("reset", format!("reply body failed: {e}"))),
            Ok(Ok(c)) => c.to_bytes(),
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(AttemptFailure::unavailable("malformed", "reply body is not valid JSON"));
        }
        Ok(Reply::Complete { status: parts.status, content_type, body })
    }
}

/// Reads until the stream's first token ([`sse::carries_output`]). What came before it (the
/// role chunk, keep-alive comments) is kept and forwarded with it.
async fn first_event(
    content_type: HeaderValue,
    mut body: Incoming,
    first_byte_by: Instant,
    ctx: &RequestCtx,
) -> Result<Reply, AttemptFailure> {
    let mut splitter = SseSplitter::default();
    let mut first = BytesMut::new();
    loop {
        let frame = match timeout_at(first_byte_by, body.frame()).await {
            Err(_) => return Err(timed_out(ctx, first_byte_by, "no first token")),
            Ok(None) => return Err(AttemptFailure::unavailable("truncated", "stream ended before its first token")),
            Ok(Some(Err(e))) => {
                return Err(AttemptFailure::unavailable("reset", format!("stream failed before its first token: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        splitter.push(&data);
        let Some(block) = splitter.take_complete() else { continue };
        let mut has_output = false;
        for event in sse::events(&block) {
            match sse::classify(event) {
                EventKind::Error(e) => return Err(failure::classify_openai_stream_error(&e)),
                EventKind::Data => has_output |= sse::carries_output(event),
                EventKind::Done => has_output = true,
                EventKind::Other => {}
            }
        }
        first.extend_from_slice(&block);
        if has_output {
            return Ok(Reply::Stream { content_type, first: first.freeze(), splitter, rest: body });
        }
    }
}

fn timed_out(ctx: &RequestCtx, at: Instant, what: &str) -> AttemptFailure {
    let which = if at >= ctx.deadline { "request deadline" } else { "attempt timeout" };
    AttemptFailure::unavailable("timeout", format!("{which} passed: {what}"))
}
