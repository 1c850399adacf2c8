//! One attempt at one endpoint, up to the point where the reply can be committed to the caller.
//!
//! Nothing reaches the caller until an attempt returns `Ok`: a non-streaming reply is read whole
//! (and translated, if the endpoint speaks another protocol), and a stream is held until its
//! first token. So every failure up to then — a refused connection, a 503, a stream that opens
//! with 200 and dies — can still fall back.

use super::RequestCtx;
use crate::canonical::{self, Event};
use crate::inbound;
use crate::outcome::Outcome;
use crate::protocol::Wire;
use crate::routing::EndpointTarget;
use crate::upstream::failure::{self, AttemptFailure};
use crate::upstream::provider::{Operation, Upstream};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use spillway_api::config::Translation;
use tokio::time::{Instant, timeout_at};

/// An upstream error body is only read to classify it; a larger one is cut.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

pub enum Reply {
    /// A whole, well-formed non-streaming reply, already in the caller's protocol, and the
    /// tokens it reports using.
    Complete {
        status: StatusCode,
        content_type: HeaderValue,
        body: Bytes,
        usage: Option<canonical::Usage>,
        dropped: Vec<String>,
    },
    /// A stream whose first token has arrived; `first` holds the provider's bytes up to it.
    Stream { first: Bytes, rest: Incoming, dropped: Vec<String> },
}

/// Sends `req` to `target`. `canonical` is the request in canonical form, present whenever some
/// endpoint of the hierarchy speaks another protocol than the caller. `cut`: a shorter bound
/// than the feature's attempt timeout until the first byte (a recovery probe's).
pub async fn run(
    target: &EndpointTarget,
    req: &mut inbound::Request,
    canonical: Option<&canonical::Request>,
    ctx: &RequestCtx,
    cut: Option<std::time::Duration>,
) -> Result<Reply, AttemptFailure> {
    let now = Instant::now();
    let bound = match (ctx.feature.attempt_timeout, cut) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    };
    let first_byte_by = bound.map_or(ctx.deadline, |t| (now + t).min(ctx.deadline));
    let up = &target.upstream;
    let wire = up.wire_for(req.protocol);
    let passthrough = wire.passes_through(req.protocol);
    let mut dropped = Vec::new();
    let upstream_req = if passthrough {
        up.request(
            &mut req.body,
            wire,
            Operation::Generate { stream: req.stream },
            Some(&req.protocol_headers),
            &ctx.id,
        )
        .await?
    } else {
        let Some(c) = canonical else {
            return Err(AttemptFailure::unavailable(Outcome::Internal, "no canonical request to translate"));
        };
        dropped = droppable(wire, c, ctx.feature.translation)?;
        let mut body = wire.encode_request(c, up.model(), up.max_tokens_field).map_err(AttemptFailure::unsupported)?;
        up.request(&mut body, wire, Operation::Generate { stream: req.stream }, None, &ctx.id).await?
    };
    let (parts, body) = head(up, wire, upstream_req, first_byte_by, ctx).await?;
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
    if req.stream {
        let expected = wire.api().stream_content_type();
        if !content_type.to_str().unwrap_or_default().starts_with(expected) {
            return Err(AttemptFailure::unavailable(
                Outcome::Malformed,
                format!("asked for a stream, got Content-Type {content_type:?}"),
            ));
        }
        return first_token(up, wire, body, first_byte_by, ctx, dropped).await;
    }
    let body = whole_body(body, first_byte_by, ctx).await?;
    if passthrough {
        let Ok(probe) = serde_json::from_slice::<UsageProbe>(&body) else {
            return Err(AttemptFailure::unavailable(Outcome::Malformed, "reply body is not valid JSON"));
        };
        let usage = probe.usage.as_ref().map(canonical::Reported::usage);
        return Ok(Reply::Complete { status: parts.status, content_type, body, usage, dropped });
    }
    let Some(reply) = wire.decode_response(&body, up.model()) else {
        return Err(AttemptFailure::unavailable(
            Outcome::Malformed,
            "reply body is not a well-formed reply of its protocol",
        ));
    };
    let encoded = req.protocol.api().encode_reply(&reply, canonical);
    Ok(Reply::Complete {
        status: StatusCode::OK,
        content_type: HeaderValue::from_static("application/json"),
        body: Bytes::from(encoded.to_string()),
        usage: Some(reply.usage),
        dropped,
    })
}

/// The fields a translation to `wire` may drop from `c` — those that only tune the answer, in a
/// lenient feature — or why this endpoint cannot serve it: a field that changes the answer, or
/// any field in a strict feature. Such a refusal is the endpoint's, not the request's: the next
/// tier is tried, and the breaker does not count it.
fn droppable(wire: Wire, c: &canonical::Request, translation: Translation) -> Result<Vec<String>, AttemptFailure> {
    let losses = wire.losses(c);
    let refused: Vec<&str> = losses
        .iter()
        .filter(|l| l.loss == canonical::Loss::Meaning || translation == Translation::Strict)
        .map(|l| l.field.as_str())
        .collect();
    if !refused.is_empty() {
        let why = if translation == Translation::Strict { " (the feature translates strictly)" } else { "" };
        return Err(AttemptFailure::unsupported(format!("{wire:?} cannot carry `{}`{why}", refused.join("`, `"))));
    }
    Ok(losses.into_iter().map(|l| l.field).collect())
}

/// A passed-through reply is read once, without building it as a tree: the parse proves it is
/// JSON and keeps only `usage` for PT accounting.
#[derive(serde::Deserialize)]
struct UsageProbe {
    #[serde(default, deserialize_with = "canonical::object")]
    usage: Option<canonical::Reported>,
}

/// Reads until the stream's first token. What came before it (the role chunk, `message_start`,
/// keep-alives) is kept and forwarded with it. An error event before it is a failed attempt.
async fn first_token(
    up: &Upstream,
    wire: Wire,
    mut body: Incoming,
    first_byte_by: Instant,
    ctx: &RequestCtx,
    dropped: Vec<String>,
) -> Result<Reply, AttemptFailure> {
    let mut decoder = wire.stream_decoder(up.model(), ctx.max_frame);
    let mut first = BytesMut::new();
    let mut events = Vec::new();
    loop {
        let frame = match timeout_at(first_byte_by, body.frame()).await {
            Err(_) => return Err(timed_out(ctx, first_byte_by, "no first token")),
            Ok(None) => {
                return Err(AttemptFailure::unavailable(Outcome::Truncated, "stream ended before its first token"));
            }
            Ok(Some(Err(e))) => {
                return Err(AttemptFailure::unavailable(
                    Outcome::Reset,
                    format!("stream failed before its first token: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        decoder.feed(&data, &mut events).map_err(|e| AttemptFailure::unavailable(Outcome::Malformed, e))?;
        first.extend_from_slice(&data);
        // Everything before the first token is held to be sent with it: keep-alives without end
        // must not grow it without bound.
        if first.len() > ctx.max_frame {
            return Err(AttemptFailure::unavailable(
                Outcome::Malformed,
                format!("{} bytes arrived before the first token; at most {} are held", first.len(), ctx.max_frame),
            ));
        }
        let mut has_output = false;
        for e in events.drain(..) {
            match e {
                Event::Error { overloaded, message } => return Err(failure::stream_error(overloaded, &message)),
                // Reasoning is the model's output too: the stream is alive.
                Event::Text(_)
                | Event::Thinking(_)
                | Event::ThinkingSignature(_)
                | Event::ToolStart { .. }
                | Event::ToolArgs { .. }
                | Event::Stop(_)
                | Event::End => has_output = true,
                Event::Start { .. } | Event::Usage(_) => {}
            }
        }
        if has_output {
            return Ok(Reply::Stream { first: first.freeze(), rest: body, dropped });
        }
    }
}

/// Sends `req` and waits for the response head within `by`. An error reply is read (its first
/// `ERROR_BODY_LIMIT` bytes) and classified; a success's head and body are returned.
pub(super) async fn head(
    up: &Upstream,
    wire: Wire,
    req: http::Request<http_body_util::Full<Bytes>>,
    by: Instant,
    ctx: &RequestCtx,
) -> Result<(http::response::Parts, Incoming), AttemptFailure> {
    let resp = match timeout_at(by, up.client.request(req)).await {
        Err(_) => return Err(timed_out(ctx, by, "no response head")),
        Ok(Err(e)) => return Err(AttemptFailure::from_client_error(&e)),
        Ok(Ok(r)) => r,
    };
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        let body = match timeout_at(by, Limited::new(body, ERROR_BODY_LIMIT).collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        return Err(failure::classify(wire, parts.status, &parts.headers, body));
    }
    Ok((parts, body))
}

/// A whole reply body, within `by` and the frame limit. A reply commits only when whole, so
/// the attempt timeout covers its body too: a body that stalls after the headers falls back
/// instead of waiting out the deadline.
pub(super) async fn whole_body(body: Incoming, by: Instant, ctx: &RequestCtx) -> Result<Bytes, AttemptFailure> {
    match timeout_at(by, Limited::new(body, ctx.max_frame).collect()).await {
        Err(_) => Err(timed_out(ctx, by, "reply body incomplete")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(AttemptFailure::unavailable(
            Outcome::Malformed,
            format!("reply body longer than {} bytes (--max-upstream-frame-bytes)", ctx.max_frame),
        )),
        Ok(Err(e)) => Err(AttemptFailure::unavailable(Outcome::Reset, format!("reply body failed: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn timed_out(ctx: &RequestCtx, at: Instant, what: &str) -> AttemptFailure {
    let which = if at >= ctx.deadline { "request deadline" } else { "attempt timeout" };
    AttemptFailure::unavailable(Outcome::Timeout, format!("{which} passed: {what}"))
}
