//! A scripted stream body: events with pauses between them, optionally cut short.

use bytes::Bytes;
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Sleep;

pub struct ScriptedBody {
    /// Held until the body is dropped: the request is in flight while its stream is.
    _hold: Option<Box<dyn Send + Sync>>,
    /// Counts bodies dropped before their last event: the reader went away.
    aborted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    events: VecDeque<Bytes>,
    /// Pause before the next event.
    sleep: Option<Pin<Box<Sleep>>>,
    interval: Duration,
    /// Fail the body (aborting the connection) once this many events have been sent.
    abort_after: Option<usize>,
    sent: usize,
    /// Sent again and again once `events` run out: a stream that never ends.
    endless: Option<Bytes>,
}

impl ScriptedBody {
    pub fn new(events: Vec<Bytes>, first_delay: Duration, interval: Duration, abort_after: Option<usize>) -> Self {
        ScriptedBody {
            _hold: None,
            aborted: None,
            events: events.into(),
            sleep: (!first_delay.is_zero()).then(|| Box::pin(tokio::time::sleep(first_delay))),
            interval,
            abort_after,
            sent: 0,
            endless: None,
        }
    }
}

impl ScriptedBody {
    /// Keeps `guard` alive as long as the body.
    pub fn hold(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._hold = Some(Box::new(guard));
        self
    }

    /// After the events, `chunk` forever.
    pub fn then_forever(mut self, chunk: Bytes) -> Self {
        self.endless = Some(chunk);
        self
    }

    pub fn count_aborts(mut self, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.aborted = Some(counter);
        self
    }
}

impl Drop for ScriptedBody {
    fn drop(&mut self) {
        if (!self.events.is_empty() || self.endless.is_some())
            && let Some(c) = &self.aborted
        {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(s) = self.sleep.as_mut() {
            ready!(s.as_mut().poll(cx));
            self.sleep = None;
        }
        if self.abort_after == Some(self.sent) {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fake: stream dropped",
            ))));
        }
        let Some(event) = self.events.pop_front().or_else(|| self.endless.clone()) else { return Poll::Ready(None) };
        self.sent += 1;
        if !self.interval.is_zero() && (!self.events.is_empty() || self.abort_after.is_some()) {
            self.sleep = Some(Box::pin(tokio::time::sleep(self.interval)));
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty() && self.endless.is_none() && self.abort_after.is_none_or(|n| n != self.sent)
    }
}
