//! What a fake does with a request: the server's defaults, overridden by `x-fake-*` headers.

use http::HeaderMap;
use std::time::Duration;

/// Behaviour of one fake reply. Every field can be set per server and per request.
#[derive(Debug, Clone)]
pub struct Script {
    /// Delay before the response head (`x-fake-delay-ms`).
    pub delay: Duration,
    /// Delay between the head and the first stream event, i.e. a slow first token
    /// (`x-fake-ttft-ms`).
    pub ttft: Duration,
    /// Content chunks in a stream, and words in a reply (`x-fake-chunks`).
    pub chunks: u32,
    /// Pause between stream chunks (`x-fake-chunk-interval-ms`).
    pub chunk_interval: Duration,
    /// Answer with this error status and an OpenAI error body (`x-fake-status`).
    pub status: Option<u16>,
    /// `retry-after` seconds on an error reply (`x-fake-retry-after`).
    pub retry_after: Option<u64>,
    /// Share of requests answered with `error_status` (`x-fake-error-rate`).
    pub error_rate: f64,
    pub error_status: u16,
    /// Close the connection before sending any response (`x-fake-reset: 1`).
    pub reset: bool,
    /// Cut the stream (abort the connection) after this many content chunks (`x-fake-drop-after`).
    pub drop_after: Option<u32>,
    /// Send an OpenAI error event after this many content chunks (`x-fake-error-after`).
    pub error_after: Option<u32>,
    /// A capacity ceiling: beyond this many requests in flight (streams until their last event),
    /// answer 429 like a provisioned endpoint that is full (`x-fake-max-in-flight`).
    pub max_in_flight: Option<u32>,
    /// A hostile stream that never ends and never frames (`x-fake-hostile`).
    pub hostile: Option<Hostile>,
    /// Answer `307 Temporary Redirect` to this URL (`x-fake-redirect`): a proxy that followed
    /// it would carry the caller's credentials to another host.
    pub redirect: Option<String>,
    /// Which offered tool to call (`x-fake-tool`): `none` answers in words whatever is offered;
    /// a name calls that tool if it is offered. Unset: the first tool offered.
    pub tool: Option<String>,
}

/// Streams a hostile upstream sends to make a proxy buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// After this many content events, one SSE line that never ends (`endless-line:N`).
    EndlessLine { after: u32 },
    /// Keep-alive comments, forever, and never a token (`keep-alives`).
    KeepAlives,
    /// An AWS event-stream prelude announcing a ~4 GiB message, then filler (`huge-frame`).
    HugeFrame,
    /// A non-streaming reply whose body stops halfway, after the head (`stalled-body`).
    StalledBody,
}

impl Hostile {
    fn parse(v: &str) -> Option<Hostile> {
        match v.split_once(':') {
            Some(("endless-line", n)) => n.parse().ok().map(|after| Hostile::EndlessLine { after }),
            None if v == "keep-alives" => Some(Hostile::KeepAlives),
            None if v == "huge-frame" => Some(Hostile::HugeFrame),
            None if v == "stalled-body" => Some(Hostile::StalledBody),
            _ => None,
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Script {
            delay: Duration::ZERO,
            ttft: Duration::ZERO,
            chunks: 5,
            chunk_interval: Duration::ZERO,
            status: None,
            retry_after: None,
            error_rate: 0.0,
            error_status: 500,
            reset: false,
            drop_after: None,
            error_after: None,
            max_in_flight: None,
            hostile: None,
            redirect: None,
            tool: None,
        }
    }
}

impl Script {
    /// This script with the request's `x-fake-*` headers applied. Unparseable values are
    /// ignored: a fake must not be the thing that fails a test for the wrong reason.
    pub fn with_headers(&self, h: &HeaderMap) -> Script {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let num = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
        let mut s = self.clone();
        if let Some(v) = num("x-fake-delay-ms") {
            s.delay = Duration::from_millis(v);
        }
        if let Some(v) = num("x-fake-ttft-ms") {
            s.ttft = Duration::from_millis(v);
        }
        if let Some(v) = num("x-fake-chunks") {
            s.chunks = v.min(100_000) as u32;
        }
        if let Some(v) = num("x-fake-chunk-interval-ms") {
            s.chunk_interval = Duration::from_millis(v);
        }
        if let Some(v) = num("x-fake-status") {
            s.status = u16::try_from(v).ok();
        }
        if let Some(v) = num("x-fake-retry-after") {
            s.retry_after = Some(v);
        }
        if let Some(v) = get("x-fake-error-rate").and_then(|v| v.parse::<f64>().ok()) {
            s.error_rate = v;
        }
        if let Some(v) = get("x-fake-reset") {
            s.reset = v == "1" || v.eq_ignore_ascii_case("true");
        }
        if let Some(v) = num("x-fake-drop-after") {
            s.drop_after = Some(v as u32);
        }
        if let Some(v) = num("x-fake-error-after") {
            s.error_after = Some(v as u32);
        }
        if let Some(v) = num("x-fake-max-in-flight") {
            s.max_in_flight = u32::try_from(v).ok();
        }
        if let Some(v) = get("x-fake-hostile").and_then(Hostile::parse) {
            s.hostile = Some(v);
        }
        if let Some(v) = get("x-fake-redirect") {
            s.redirect = Some(v.to_owned());
        }
        if let Some(v) = get("x-fake-tool") {
            s.tool = Some(v.to_owned());
        }
        s
    }

    /// The error status this request gets, if any.
    pub fn forced_status(&self) -> Option<u16> {
        self.status
            .or_else(|| (self.error_rate > 0.0 && fastrand::f64() < self.error_rate).then_some(self.error_status))
    }
}
