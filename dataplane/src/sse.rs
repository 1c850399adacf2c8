//! Server-sent-events framing, just enough to proxy a stream safely.
//!
//! The proxy never forwards half an event: it cuts the byte stream at event boundaries (a blank
//! line), so when an upstream dies it can append a well-formed error event instead of leaving the
//! client with a torn line. Events are forwarded as the exact bytes received.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

pub struct SseSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a boundary, so a large event is scanned once.
    scanned: usize,
    /// The longest event held while it is unfinished: an upstream that never sends a blank line
    /// must not grow the sidecar until it is killed.
    max_event: usize,
}

impl SseSplitter {
    pub fn new(max_event: usize) -> Self {
        SseSplitter { buf: BytesMut::new(), scanned: 0, max_event }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Like [`take_complete`](Self::take_complete), but an unfinished event longer than the
    /// cap is an error: the stream cannot be framed within bounded memory.
    pub fn take_bounded(&mut self) -> Result<Option<Bytes>, String> {
        let block = self.take_complete();
        if self.buf.len() > self.max_event {
            self.buf = BytesMut::new();
            return Err(format!("an SSE event longer than {} bytes", self.max_event));
        }
        Ok(block)
    }

    /// Every complete event buffered so far, as one block; `None` until one is complete.
    pub fn take_complete(&mut self) -> Option<Bytes> {
        let from = self.scanned.saturating_sub(2);
        let end = last_boundary(&self.buf[from..]).map(|e| e + from);
        self.scanned = self.buf.len();
        let end = end?;
        self.scanned -= end;
        Some(self.buf.split_to(end).freeze())
    }

    /// Bytes of an event that has not ended yet.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }
}

/// The end (exclusive) of the last blank line in `b`: `\n\n` or `\n\r\n`.
fn last_boundary(b: &[u8]) -> Option<usize> {
    (1..b.len()).rev().find_map(|i| {
        if b[i] != b'\n' {
            return None;
        }
        if b[i - 1] == b'\n' || (i >= 2 && b[i - 1] == b'\r' && b[i - 2] == b'\n') { Some(i + 1) } else { None }
    })
}

/// Splits a block of complete events into events.
pub fn events(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = block;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = (1..rest.len())
            .find(|&i| {
                rest[i] == b'\n' && (rest[i - 1] == b'\n' || (i >= 2 && rest[i - 1] == b'\r' && rest[i - 2] == b'\n'))
            })
            .map_or(rest.len(), |i| i + 1);
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(event)
    })
}

#[derive(Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `data: [DONE]`: the OpenAI end-of-stream marker.
    Done,
    /// A `data:` payload whose top level is an `error` object: a mid-stream failure.
    Error(serde_json::Value),
    Data,
    /// Comments and events without data (keep-alives).
    Other,
}

/// The `data:` payload of an event (multi-line data joined by `\n`, per the SSE spec). The
/// common single-line case borrows from the event.
pub fn data(event: &[u8]) -> Option<Cow<'_, str>> {
    let mut out: Option<Cow<'_, str>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"data:") else { continue };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let text = String::from_utf8_lossy(rest);
        out = Some(match out {
            None => text,
            Some(prev) => Cow::Owned(format!("{prev}\n{text}")),
        });
    }
    out
}

/// The `event:` name of an event (Anthropic names every event; OpenAI names none).
pub fn event_name(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name = line.strip_prefix(b"event:")?;
        Some(name.strip_prefix(b" ").unwrap_or(name))
    })
}

/// Classifies an OpenAI stream event without parsing content chunks.
pub fn classify(event: &[u8]) -> EventKind {
    let Some(payload) = data(event) else { return EventKind::Other };
    if payload.trim() == "[DONE]" {
        return EventKind::Done;
    }
    // Parse only what might be an error; content chunks are forwarded without a parse.
    if payload.contains("\"error\"")
        && let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str::<serde_json::Value>(&payload)
        && !obj.contains_key("choices")
        && let Some(err) = obj.remove("error")
        && !err.is_null()
    {
        return EventKind::Error(err);
    }
    EventKind::Data
}

/// Whether an OpenAI chunk carries output: a delta with anything but its role (content, tool
/// calls, refusal, reasoning…), a finish reason, or the usage chunk. The role-only chunk that
/// opens every stream does not count, so a stream that opens and then stalls or dies can still
/// fall back, and time to first token means what it says.
pub fn carries_output(event: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        delta: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    let Some(payload) = data(event) else { return false };
    let Ok(chunk) = serde_json::from_str::<Chunk>(&payload) else { return true };
    chunk.choices.is_empty()
        || chunk.choices.iter().any(|c| {
            c.finish_reason.is_some()
                || c.delta.iter().any(|(k, v)| k != "role" && !v.is_null() && v.as_str() != Some(""))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_at_event_boundaries_whatever_the_chunking() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = SseSplitter::new(1 << 20);
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                s.push(part);
                if let Some(b) = s.take_complete() {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out, stream, "cut at {cut}");
            assert_eq!(s.pending_len(), 0);
        }
    }

    #[test]
    fn holds_back_an_unfinished_event() {
        let mut s = SseSplitter::new(1 << 20);
        s.push(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(&s.take_complete().unwrap()[..], b"data: {\"a\":1}\n\n");
        assert_eq!(s.take_complete(), None);
        s.push(b":2}\n");
        assert_eq!(s.take_complete(), None);
        s.push(b"\n");
        assert_eq!(&s.take_complete().unwrap()[..], b"data: {\"b\":2}\n\n");
    }

    #[test]
    fn an_event_that_never_ends_is_an_error_at_the_cap_not_unbounded_memory() {
        let mut s = SseSplitter::new(1024);
        s.push(b"data: {\"a\":1}\n\n");
        assert_eq!(s.take_bounded().unwrap().as_deref(), Some(&b"data: {\"a\":1}\n\n"[..]));
        for _ in 0..3 {
            s.push(&[b'x'; 300]);
            assert_eq!(s.take_bounded(), Ok(None), "under the cap it waits for the rest");
        }
        s.push(&[b'x'; 300]);
        assert!(s.take_bounded().unwrap_err().contains("longer than 1024 bytes"));
        assert_eq!(s.pending_len(), 0, "what was held is released");
    }

    #[test]
    fn classifies_the_fixture_streams() {
        let text = include_bytes!("../../tests/fixtures/openai/chat_stream.sse");
        let kinds: Vec<EventKind> = events(text).map(classify).collect();
        assert_eq!(kinds.last(), Some(&EventKind::Done));
        assert!(kinds[..kinds.len() - 1].iter().all(|k| *k == EventKind::Data));

        let text = include_bytes!("../../tests/fixtures/openai/chat_stream_midstream_error.sse");
        let kinds: Vec<EventKind> = events(text).map(classify).collect();
        assert!(matches!(kinds.last(), Some(EventKind::Error(e)) if e["type"].is_string()), "{kinds:?}");
        assert!(!kinds.contains(&EventKind::Done));
    }

    #[test]
    fn the_role_chunk_is_not_output_but_content_tool_calls_and_usage_are() {
        let text = include_bytes!("../../tests/fixtures/openai/chat_stream.sse");
        let flags: Vec<bool> = events(text).filter(|e| classify(e) == EventKind::Data).map(carries_output).collect();
        assert!(!flags[0], "role chunk");
        assert!(flags[1..].iter().all(|f| *f), "{flags:?}");
        let text = include_bytes!("../../tests/fixtures/openai/chat_stream_tool_call.sse");
        let first_output = events(text).position(carries_output).unwrap();
        let first = data(events(text).nth(first_output).unwrap()).unwrap();
        assert!(first.contains("tool_calls"), "{first}");
    }

    #[test]
    fn anthropic_event_names() {
        let text = include_bytes!("../../tests/fixtures/anthropic/messages_stream.sse");
        let names: Vec<&[u8]> = events(text).filter_map(event_name).collect();
        assert_eq!(names.first(), Some(&&b"message_start"[..]));
        assert_eq!(names.last(), Some(&&b"message_stop"[..]));
    }

    #[test]
    fn content_that_mentions_error_is_still_data() {
        let ev = b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\"\"}}],\"error\":null}\n\n";
        assert_eq!(classify(ev), EventKind::Data);
    }
}
