//! The body of a committed stream: forwards whole events and guarantees a well-formed end.
//!
//! A stream ends in exactly one of three ways the client can tell apart: the upstream's own
//! `[DONE]`, the upstream's own error event, or an error event written by spillway when the
//! upstream fails, stalls past the deadline or closes early. A dropped body (the client went
//! away) drops the upstream body with it, which closes the upstream request.

use super::Finish;
use crate::sse::{self, EventKind, SseSplitter};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep};

pub struct GuardedStream {
    /// Bytes to send before polling upstream again.
    next: Option<Bytes>,
    upstream: Option<Incoming>,
    splitter: SseSplitter,
    deadline: Pin<Box<Sleep>>,
    finish: Option<Finish>,
    endpoint: std::sync::Arc<str>,
}

impl GuardedStream {
    pub fn new(first: Bytes, splitter: SseSplitter, rest: Incoming, deadline: Instant, finish: Finish) -> Self {
        let endpoint = finish.endpoint.clone();
        let mut s = GuardedStream {
            next: None,
            upstream: Some(rest),
            splitter,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            finish: Some(finish),
            endpoint,
        };
        s.next = s.inspect(first);
        s
    }

    /// Looks for the end of the stream in a block about to be forwarded.
    fn inspect(&mut self, block: Bytes) -> Option<Bytes> {
        for event in sse::events(&block) {
            match sse::classify(event) {
                EventKind::Done => self.end("ok"),
                EventKind::Error(_) => self.end("stream_error"),
                EventKind::Data | EventKind::Other => {}
            }
        }
        Some(block)
    }

    fn end(&mut self, outcome: &'static str) {
        self.upstream = None;
        if let Some(f) = self.finish.take() {
            f.done(outcome);
        }
    }

    /// Ends the stream with an error event of spillway's own.
    fn fail(&mut self, outcome: &'static str, code: &'static str, message: String) -> Bytes {
        self.end(outcome);
        let event = json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}});
        Bytes::from(format!("data: {event}\n\n"))
    }
}

impl Body for GuardedStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.next.take() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            let Some(upstream) = this.upstream.as_mut() else { return Poll::Ready(None) };
            if this.deadline.as_mut().poll(cx).is_ready() {
                let msg = format!("the request deadline passed while `{}` was streaming", this.endpoint);
                this.next = Some(this.fail("timeout", "deadline_exceeded", msg));
                continue;
            }
            match ready!(Pin::new(upstream).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    this.splitter.push(&data);
                    if let Some(block) = this.splitter.take_complete() {
                        this.next = this.inspect(block);
                    }
                }
                Some(Err(e)) => {
                    let msg = format!("upstream `{}` failed mid-stream: {e}", this.endpoint);
                    this.next = Some(this.fail("reset", "upstream_stream_failed", msg));
                }
                None => {
                    let msg = format!("upstream `{}` closed the stream before it was complete", this.endpoint);
                    this.next = Some(this.fail("truncated", "upstream_stream_truncated", msg));
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
            f.done("client_cancelled");
        }
    }
}
