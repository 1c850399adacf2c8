//! The log writer: lines are batched in memory and written out in large chunks.
//!
//! Every request ends in an access-log line. Writing each line to stderr costs a syscall on the
//! request path; handing each to a writer thread (tracing-appender's non-blocking writer) costs a
//! wake-up per line instead, which on a small pod is no cheaper. Batching costs neither: a line
//! is appended to a buffer, and the buffer goes out when it reaches [`BATCH_BYTES`], when a
//! warning or error is logged (those are never held back), every [`FLUSH_EVERY`] from a
//! background thread, and when the [`FlushOnDrop`] guard is dropped at exit. Envoy's access log
//! makes the same trade (its file flush interval).
//!
//! Lines are written in the order they were logged: the output lock is taken before the buffer
//! lock is released.
//!
//! [`access`] writes the access-log line itself, into the same buffer.

pub mod access;

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A full buffer is written at once: a few hundred access-log lines.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The longest a quiet line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A `MakeWriter` for tracing-subscriber that batches lines written to `W`.
pub struct Batched<W: Write + Send + 'static> {
    inner: Arc<Inner<W>>,
}

impl<W: Write + Send + 'static> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Batched { inner: self.inner.clone() }
    }
}

struct Inner<W> {
    buf: Mutex<Vec<u8>>,
    out: Mutex<W>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves at worst a partial line; logging must go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> Batched<W> {
    pub fn new(out: W) -> Self {
        Batched { inner: Arc::new(Inner { buf: Mutex::new(Vec::with_capacity(BATCH_BYTES)), out: Mutex::new(out) }) }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        self.inner.write_out(lock(&self.inner.buf));
    }

    /// Starts the thread that writes quiet lines out every [`FLUSH_EVERY`]; the returned guard
    /// writes out the rest when dropped.
    pub fn start_flusher(&self) -> FlushOnDrop<W> {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new().name("spillway-log".into()).spawn(move || {
            loop {
                // Its own OS thread, not a tokio worker: blocking here blocks nothing else.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(FLUSH_EVERY);
                let Some(inner) = weak.upgrade() else { return };
                inner.write_out(lock(&inner.buf));
            }
        });
        if let Err(e) = spawned {
            // Lines still go out when the buffer fills, on warnings and at exit.
            eprintln!("spillway-proxy: cannot start the log flusher thread: {e}");
        }
        FlushOnDrop(self.clone())
    }

    /// Appends whole lines written outside tracing (the access log).
    pub fn append(&self, line: &[u8]) {
        self.inner.append(line);
    }
}

impl<W: Write> Inner<W> {
    fn append(&self, bytes: &[u8]) {
        let mut buf = lock(&self.buf);
        buf.extend_from_slice(bytes);
        if buf.len() >= BATCH_BYTES {
            self.write_out(buf);
        }
    }

    fn write_out(&self, mut buf: MutexGuard<'_, Vec<u8>>) {
        if buf.is_empty() {
            return;
        }
        let mut out = lock(&self.out);
        let batch = std::mem::replace(&mut *buf, Vec::with_capacity(BATCH_BYTES));
        drop(buf);
        // Nowhere to report a failed log write; the line is lost, the request is not.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
}

/// Writes out what is buffered when dropped (hold it in `main`).
pub struct FlushOnDrop<W: Write + Send + 'static>(Batched<W>);

impl<W: Write + Send + 'static> FlushOnDrop<W> {
    /// Writes out what is buffered now, before writing to the same stream directly.
    pub fn flush(&self) {
        self.0.flush();
    }
}

impl<W: Write + Send + 'static> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// One event's writer: appends to the buffer, and writes it out after a warning or an error.
pub struct Line<'a, W: Write> {
    inner: &'a Inner<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.inner.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            self.inner.write_out(lock(&self.inner.buf));
        }
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for Batched<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { inner: &self.inner, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line { inner: &self.inner, urgent: *meta.level() <= Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose contents the test can read; counts the writes it was given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(b);
            s.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn subscriber(w: Batched<Sink>) -> impl tracing::Subscriber {
        tracing_subscriber::fmt().with_ansi(false).without_time().with_writer(w).finish()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_keep_their_order() {
        let sink = Sink::default();
        let log = Batched::new(sink.clone());
        tracing::subscriber::with_default(subscriber(log.clone()), || {
            for i in 0..3 {
                tracing::info!(i, "request");
            }
        });
        assert_eq!(sink.text(), "", "info lines are held until a flush");
        log.flush();
        let text = sink.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for (n, l) in lines.iter().enumerate() {
            assert!(l.contains("INFO") && l.ends_with(&format!("request i={n}")), "{l}");
        }
        assert_eq!(sink.writes(), 1, "three lines, one write");
    }

    #[test]
    fn a_warning_goes_out_at_once_with_what_came_before_it() {
        let sink = Sink::default();
        let log = Batched::new(sink.clone());
        tracing::subscriber::with_default(subscriber(log.clone()), || {
            tracing::info!("first");
            tracing::warn!("second");
        });
        let text = sink.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("first") && lines[1].contains("WARN") && lines[1].ends_with("second"));
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting() {
        let sink = Sink::default();
        let log = Batched::new(sink.clone());
        let line = "x".repeat(200);
        tracing::subscriber::with_default(subscriber(log.clone()), || {
            for _ in 0..(BATCH_BYTES / 200 + 1) {
                tracing::info!("{line}");
            }
        });
        let written = sink.text().len();
        assert!(written >= BATCH_BYTES, "a full batch went out: {written} bytes");
        assert!(sink.writes() <= 2, "in few writes: {}", sink.writes());
    }

    #[test]
    fn the_guard_flushes_at_exit() {
        let sink = Sink::default();
        let log = Batched::new(sink.clone());
        let guard = FlushOnDrop(log.clone());
        tracing::subscriber::with_default(subscriber(log.clone()), || tracing::info!("last words"));
        assert_eq!(sink.text(), "");
        drop(guard);
        assert!(sink.text().ends_with("last words\n"), "{}", sink.text());
    }
}
