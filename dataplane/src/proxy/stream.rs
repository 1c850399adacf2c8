//! The body of a committed stream: forwards whole events and guarantees a well-formed end.
//!
//! A stream ends in exactly one of three ways the client can tell apart: the provider's own end
//! (`[DONE]`, `message_stop`), the provider's own error event, or an error event written by
//! spillway when the provider fails, stalls past the deadline or closes early — always in the
//! client's protocol. A dropped body (the client went away) drops the upstream body with it,
//! which closes the upstream request.

use super::finish::Finish;
use crate::canonical::{Event, Usage};
use crate::outcome::Outcome;
use crate::protocol::{self, Protocol, StreamDecoder, StreamEncoder, Wire};
use crate::sse::{self, SseSplitter};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep};

/// How provider events become client events.
pub enum Mode {
    /// Same protocol: events are forwarded byte for byte, and the end is spotted without
    /// parsing JSON.
    Passthrough(Protocol),
    /// OpenAI pass-through where spillway asked the provider for the usage chunk the client did
    /// not ask for (PT accounting needs it): forwarded as-is, minus that chunk.
    PassthroughHidingUsage,
    /// Provider events → canonical events → client events.
    Translate { decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder> },
    /// The client's own events in another framing (Anthropic's on Bedrock InvokeModel), re-framed
    /// as SSE unchanged.
    Reframe(Box<protocol::bedrock::InvokeReframe>),
}

impl Mode {
    pub fn new(
        client: Protocol,
        wire: Wire,
        model: &str,
        include_usage: bool,
        request: Option<&crate::canonical::Request>,
        hide_usage: bool,
        max_frame: usize,
    ) -> Mode {
        if wire.replies_natively(client) && hide_usage && client.api().usage_is_optional() {
            Mode::PassthroughHidingUsage
        } else if wire.replies_natively(client) {
            Mode::Passthrough(client)
        } else if wire.passes_through(client) {
            Mode::Reframe(Box::new(protocol::bedrock::InvokeReframe::new(max_frame)))
        } else {
            Mode::Translate {
                decoder: wire.stream_decoder(model, max_frame),
                encoder: client.api().stream_encoder(include_usage, request),
            }
        }
    }
}

pub struct GuardedStream {
    mode: Mode,
    /// Bytes to send before polling upstream again.
    next: Option<Bytes>,
    upstream: Option<Incoming>,
    splitter: SseSplitter,
    deadline: Pin<Box<Sleep>>,
    finish: Option<Finish>,
    endpoint: std::sync::Arc<str>,
    events: Vec<Event>,
    /// When the client was last sent something, for the longest inter-token gap.
    last_sent: Instant,
    /// Token usage the stream reported so far (for PT accounting).
    usage: Usage,
    /// The end of the shutdown grace period.
    cut: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl GuardedStream {
    pub fn new(
        mode: Mode,
        first: Bytes,
        rest: Incoming,
        deadline: Instant,
        finish: Finish,
        max_frame: usize,
        cut: tokio_util::sync::CancellationToken,
    ) -> Self {
        let endpoint = finish.target.name.clone();
        let mut s = GuardedStream {
            mode,
            next: None,
            upstream: Some(rest),
            splitter: SseSplitter::new(max_frame),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            finish: Some(finish),
            endpoint,
            events: Vec::new(),
            last_sent: Instant::now(),
            usage: Usage::default(),
            cut: Box::pin(cut.cancelled_owned()),
        };
        s.next = s.on_data(&first);
        s
    }

    /// Turns provider bytes into what the client gets, noticing the stream's end.
    fn on_data(&mut self, data: &[u8]) -> Option<Bytes> {
        let mut ended = None;
        let out = match &mut self.mode {
            Mode::Passthrough(_) | Mode::PassthroughHidingUsage => {
                self.splitter.push(data);
                return match self.splitter.take_bounded() {
                    Ok(block) => self.passthrough(block?),
                    Err(e) => {
                        let msg = format!("upstream `{}` sent a stream spillway cannot frame: {e}", self.endpoint);
                        Some(self.fail(Outcome::Malformed, "upstream_stream_corrupt", msg))
                    }
                };
            }
            Mode::Reframe(reframe) => {
                let mut out = BytesMut::new();
                if let Err(e) = reframe.feed(data, &mut out, &mut self.events) {
                    let msg = format!("upstream `{}` sent a corrupt stream: {e}", self.endpoint);
                    return Some(self.fail(Outcome::Malformed, "upstream_stream_corrupt", msg));
                }
                for e in self.events.drain(..) {
                    match e {
                        Event::Usage(u) => self.usage.merge(u),
                        Event::End => ended = Some(Outcome::Ok),
                        Event::Error { .. } => ended = Some(Outcome::StreamError),
                        _ => {}
                    }
                }
                out.freeze()
            }
            Mode::Translate { decoder, encoder } => {
                if let Err(e) = decoder.feed(data, &mut self.events) {
                    let msg = format!("upstream `{}` sent a corrupt stream: {e}", self.endpoint);
                    return Some(self.fail(Outcome::Malformed, "upstream_stream_corrupt", msg));
                }
                let mut out = BytesMut::new();
                for e in self.events.drain(..) {
                    encoder.encode(&e, &mut out);
                    match e {
                        Event::Usage(u) => self.usage.merge(u),
                        Event::End => ended = Some(Outcome::Ok),
                        Event::Error { .. } => ended = Some(Outcome::StreamError),
                        _ => {}
                    }
                    if ended.is_some() {
                        break;
                    }
                }
                out.freeze()
            }
        };
        if let Some(outcome) = ended {
            self.end(outcome);
        }
        (!out.is_empty()).then_some(out)
    }

    /// A block of whole events of the client's own protocol, forwarded as-is.
    fn passthrough(&mut self, block: Bytes) -> Option<Bytes> {
        let mut ended = None;
        let out = match &mut self.mode {
            Mode::PassthroughHidingUsage => {
                let api = Protocol::OpenAi.api();
                let (mut kept, mut hid) = (BytesMut::new(), false);
                for event in sse::events(&block) {
                    let usage = reported_usage(event);
                    if let Some(u) = usage {
                        self.usage.merge(u);
                    }
                    ended = api.stream_end(event).or(ended);
                    // The usage-only chunk has no choices; content chunks carry `usage: null`.
                    if usage.is_some() && event.windows(12).any(|w| w == b"\"choices\":[]") {
                        hid = true;
                    } else {
                        kept.extend_from_slice(event);
                    }
                }
                if hid { kept.freeze() } else { block }
            }
            Mode::Passthrough(p) => {
                let api = p.api();
                for event in sse::events(&block) {
                    if let Some(u) = reported_usage(event) {
                        self.usage.merge(u);
                    }
                    ended = api.stream_end(event).or(ended);
                }
                block
            }
            Mode::Translate { .. } | Mode::Reframe(_) => block,
        };
        if let Some(outcome) = ended {
            self.end(outcome);
        }
        (!out.is_empty()).then_some(out)
    }

    fn end(&mut self, outcome: Outcome) {
        self.upstream = None;
        if let Some(mut f) = self.finish.take() {
            if self.usage != Usage::default() {
                f.usage = Some(self.usage);
            }
            f.done(outcome);
        }
    }

    /// Ends the stream with an error event of spillway's own, in the client's protocol.
    fn fail(&mut self, outcome: Outcome, code: &'static str, message: String) -> Bytes {
        self.end(outcome);
        let mut out = BytesMut::new();
        match &mut self.mode {
            Mode::Translate { encoder, .. } => encoder.failure(code, &message, &mut out),
            Mode::Passthrough(p) => protocol::stream_encoder(*p, false).failure(code, &message, &mut out),
            Mode::Reframe(_) => protocol::stream_encoder(Protocol::Anthropic, false).failure(code, &message, &mut out),
            Mode::PassthroughHidingUsage => {
                protocol::stream_encoder(Protocol::OpenAi, false).failure(code, &message, &mut out)
            }
        }
        out.freeze()
    }
}

/// Usage in a pass-through event: OpenAI's usage chunk, Anthropic's `message_start` and
/// `message_delta`. Only events that mention usage are parsed.
fn reported_usage(event: &[u8]) -> Option<Usage> {
    if !event.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&sse::data(event)?).ok()?;
    let u =
        v.get("usage").or_else(|| v.pointer("/message/usage")).or_else(|| v.pointer("/response/usage"))?.as_object()?;
    Some(Usage::reported(u))
}

impl Body for GuardedStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.next.take() {
                let now = Instant::now();
                if let Some(f) = this.finish.as_mut() {
                    let gap = now.saturating_duration_since(this.last_sent);
                    f.max_gap = Some(f.max_gap.map_or(gap, |g| g.max(gap)));
                }
                this.last_sent = now;
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            let Some(upstream) = this.upstream.as_mut() else { return Poll::Ready(None) };
            if this.deadline.as_mut().poll(cx).is_ready() {
                let msg = format!("the request deadline passed while `{}` was streaming", this.endpoint);
                this.next = Some(this.fail(Outcome::Timeout, "deadline_exceeded", msg));
                continue;
            }
            if this.cut.as_mut().poll(cx).is_ready() {
                this.next =
                    Some(this.fail(Outcome::Shutdown, "shutting_down", super::reply::SHUTDOWN_MESSAGE.to_owned()));
                continue;
            }
            match ready!(Pin::new(upstream).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    this.next = this.on_data(&data);
                }
                Some(Err(e)) => {
                    let msg = format!("upstream `{}` failed mid-stream: {e}", this.endpoint);
                    this.next = Some(this.fail(Outcome::Reset, "upstream_stream_failed", msg));
                }
                None => {
                    let msg = format!("upstream `{}` closed the stream before it was complete", this.endpoint);
                    this.next = Some(this.fail(Outcome::Truncated, "upstream_stream_truncated", msg));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none() && self.upstream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            f.done(Outcome::ClientCancelled);
        }
    }
}
