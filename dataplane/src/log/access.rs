//! The access log: one line per request, target `spillway::access`.
//!
//! The line is the one tracing-subscriber's text or JSON format would write for the event, but
//! it is formatted here, straight into the batched writer: through tracing's field machinery it
//! cost ≈ 7 µs of CPU per request, a fifth of the sidecar's maximum rate (docs/benchmarks.md).
//! `RUST_LOG` still decides whether it is written. Until [`install`] is called (in a test or an
//! embedding program) the line goes through tracing as an ordinary event.

use super::Batched;
use std::io::{Stderr, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

pub const TARGET: &str = "spillway::access";

/// What the access log says about one request.
pub struct Record<'a> {
    pub request_id: &'a str,
    pub feature: &'a str,
    pub endpoint: &'a str,
    pub attempts: usize,
    pub outcome: crate::outcome::Outcome,
    pub elapsed: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Sink {
    out: Batched<Stderr>,
    format: Format,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines straight to `out` in `format` from now on (once per process).
pub fn install(out: Batched<Stderr>, format: Format) {
    let _ = SINK.set(Sink { out, format });
}

/// Logs the request's access line, if `RUST_LOG` lets `spillway::access` through.
pub fn record(r: &Record<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        event(r);
        return;
    };
    let mut line = Vec::with_capacity(256);
    let write = match sink.format {
        Format::Text => text,
        Format::Json => json,
    };
    write(r, SystemTime::now(), &mut line);
    sink.out.append(&line);
}

/// The line as an ordinary tracing event: what [`text`] and [`json`] must write byte for byte.
fn event(r: &Record<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = %r.request_id,
        feature = %r.feature,
        endpoint = %r.endpoint,
        attempts = r.attempts,
        outcome = r.outcome.as_str(),
        elapsed_ms = elapsed_ms(r.elapsed),
        "request"
    );
}

fn elapsed_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `2026-11-22T22:06:54.795869Z  INFO spillway::access: request request_id=… elapsed_ms=3.8`
fn text(r: &Record<'_>, now: SystemTime, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "{}  INFO {TARGET}: request request_id={} feature={} endpoint={} attempts={} outcome={:?} elapsed_ms={:?}",
        humantime::format_rfc3339_micros(now),
        r.request_id,
        r.feature,
        r.endpoint,
        r.attempts,
        r.outcome.as_str(),
        elapsed_ms(r.elapsed),
    );
}

/// `{"timestamp":…,"level":"INFO","fields":{"message":"request",…},"target":"spillway::access"}`
fn json(r: &Record<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let s = |out: &mut Vec<u8>, v: &str| {
        // A str always serialises.
        let _ = serde_json::to_writer(&mut *out, v);
    };
    let _ = write!(
        out,
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"fields\":{{\"message\":\"request\",\"request_id\":",
        humantime::format_rfc3339_micros(now)
    );
    s(out, r.request_id);
    out.extend_from_slice(b",\"feature\":");
    s(out, r.feature);
    out.extend_from_slice(b",\"endpoint\":");
    s(out, r.endpoint);
    let _ = write!(out, ",\"attempts\":{},\"outcome\":", r.attempts);
    s(out, r.outcome.as_str());
    out.extend_from_slice(b",\"elapsed_ms\":");
    let _ = serde_json::to_writer(&mut *out, &elapsed_ms(r.elapsed));
    let _ = writeln!(out, "}},\"target\":\"{TARGET}\"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn record() -> Record<'static> {
        Record {
            request_id: "req_0123456789abcdef01234567",
            feature: "support-chat",
            endpoint: "claude \"eu\"",
            attempts: 2,
            outcome: crate::outcome::Outcome::Ok,
            elapsed: Duration::from_micros(3_803_836),
        }
    }

    /// The line tracing-subscriber writes for the same event, in the given format.
    fn via_tracing(json: bool) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let w = sink.clone();
        let fmt = tracing_subscriber::fmt().with_ansi(false).with_writer(move || w.clone());
        if json {
            tracing::subscriber::with_default(fmt.json().finish(), || event(&record()));
        } else {
            tracing::subscriber::with_default(fmt.finish(), || event(&record()));
        }
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    fn ours(f: fn(&Record<'_>, SystemTime, &mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&record(), SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_903_614_795_869), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_text_line_is_the_one_tracing_writes() {
        let theirs = via_tracing(false);
        let ours = ours(text);
        assert!(ours.starts_with("2026-11-28T22:06:54.795869Z "), "{ours}");
        // Everything after the timestamp is identical.
        let tail = |l: &str| l.split_once(' ').map(|(_, t)| t.to_owned()).unwrap();
        assert_eq!(tail(&ours), tail(&theirs));
    }

    #[test]
    fn the_json_line_is_the_one_tracing_writes() {
        let theirs: serde_json::Value = serde_json::from_str(&via_tracing(true)).unwrap();
        let text = ours(json);
        assert!(text.ends_with("}\n"));
        let mut ours: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ours["timestamp"], "2026-11-28T22:06:54.795869Z");
        ours["timestamp"] = theirs["timestamp"].clone();
        assert_eq!(ours, theirs);
        assert_eq!(ours["fields"]["endpoint"], "claude \"eu\"");
    }
}
