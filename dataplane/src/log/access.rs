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
    /// How the request ended: an attempt's [`Outcome`](crate::outcome::Outcome) name, or the
    /// code of the error spillway answered with (`invalid_request`, `all_endpoints_failed`, …).
    pub outcome: &'static str,
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
        outcome = r.outcome,
        elapsed_ms = elapsed_ms(r.elapsed),
        "request"
    );
}

fn elapsed_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `2026-11-22T22:06:54.795869Z  INFO spillway::access: request request_id=… elapsed_ms=3.8`,
/// written piece by piece: through `write!` the line cost ≈ 2,700 instructions.
fn text(r: &Record<'_>, now: SystemTime, out: &mut Vec<u8>) {
    rfc3339_micros(now, out);
    out.extend_from_slice(b"  INFO ");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b": request request_id=");
    out.extend_from_slice(r.request_id.as_bytes());
    out.extend_from_slice(b" feature=");
    out.extend_from_slice(r.feature.as_bytes());
    out.extend_from_slice(b" endpoint=");
    out.extend_from_slice(r.endpoint.as_bytes());
    out.extend_from_slice(b" attempts=");
    out.extend_from_slice(itoa::Buffer::new().format(r.attempts).as_bytes());
    // Outcome names are identifiers: their Debug form is the name in quotes.
    out.extend_from_slice(b" outcome=\"");
    out.extend_from_slice(r.outcome.as_bytes());
    out.extend_from_slice(b"\" elapsed_ms=");
    float(elapsed_ms(r.elapsed), out);
    out.push(b'\n');
}

/// A float as Rust's `{:?}` writes it: the shortest digits that read back the same, which is
/// what ryu writes too. (The two differ only below 0.0001 and from 1e16 on, where one uses an
/// exponent and the other not: no request takes 100 ns or 300,000 years.)
fn float(v: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
}

/// `2026-11-22T22:06:54.795869Z`, as humantime's `format_rfc3339_micros` writes it.
fn rfc3339_micros(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Days to a civil date (Howard Hinnant's `civil_from_days`).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let tod = secs % 86_400;
    let digits = |out: &mut Vec<u8>, v: u64, n: u32| {
        for i in (0..n).rev() {
            out.push(b'0' + (v / 10u64.pow(i) % 10) as u8);
        }
    };
    digits(out, year as u64, 4);
    out.push(b'-');
    digits(out, month as u64, 2);
    out.push(b'-');
    digits(out, day as u64, 2);
    out.push(b'T');
    digits(out, tod / 3_600, 2);
    out.push(b':');
    digits(out, tod % 3_600 / 60, 2);
    out.push(b':');
    digits(out, tod % 60, 2);
    out.push(b'.');
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `{"timestamp":…,"level":"INFO","fields":{"message":"request",…},"target":"spillway::access"}`
fn json(r: &Record<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let s = |out: &mut Vec<u8>, v: &str| {
        // A str always serialises.
        let _ = serde_json::to_writer(&mut *out, v);
    };
    out.extend_from_slice(b"{\"timestamp\":\"");
    rfc3339_micros(now, out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"request_id\":");
    s(out, r.request_id);
    out.extend_from_slice(b",\"feature\":");
    s(out, r.feature);
    out.extend_from_slice(b",\"endpoint\":");
    s(out, r.endpoint);
    let _ = write!(out, ",\"attempts\":{},\"outcome\":", r.attempts);
    s(out, r.outcome);
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
            outcome: "ok",
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
    fn elapsed_times_are_written_as_rust_debug_writes_them() {
        let mut rng = fastrand::Rng::with_seed(11);
        let edges = [0.0001, 0.001, 1.0, 3.803836, 10.790028999999999, 60_000.0, 1e15];
        let values: Vec<f64> =
            edges.into_iter().chain((0..5_000).map(|_| 0.0001 + rng.f64() * 10f64.powi(rng.i32(-3..8)))).collect();
        for v in values {
            let mut ours = Vec::new();
            float(v, &mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), format!("{v:?}"));
        }
    }

    #[test]
    fn timestamps_are_the_ones_humantime_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let edges = [0, 951_782_400, 4_107_542_399, 1_709_164_800, 1_795_903_614];
        let times: Vec<u64> = edges.into_iter().chain((0..2_000).map(|_| rng.u64(0..4_102_444_800))).collect();
        for secs in times {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, rng.u32(0..1_000_000_000));
            let mut ours = Vec::new();
            rfc3339_micros(t, &mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), humantime::format_rfc3339_micros(t).to_string(), "{secs}");
        }
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
