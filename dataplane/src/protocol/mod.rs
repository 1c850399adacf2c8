//! Wire protocols, each translated to and from the [`canonical`](crate::canonical) form.
//!
//! Every protocol provides the same contract, used for whichever side of the proxy speaks it:
//! - request: client JSON → canonical (`decode_request`), canonical → provider JSON
//!   (`encode_request`);
//! - response: provider JSON → canonical (`decode_response`), canonical → client JSON
//!   (`encode_response`);
//! - stream: provider events → canonical events (`StreamDecoder`), canonical events → client
//!   events (`StreamEncoder`);
//! - errors: the client's error body for a status and message (`error_body`).

pub mod anthropic;
pub mod openai;

use crate::canonical::Event;
use bytes::BytesMut;

/// The API a client or an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI Chat Completions (OpenAI, Azure OpenAI, OpenAI-compatible servers).
    OpenAi,
    /// Anthropic Messages (Anthropic; the same body on Bedrock invoke and Vertex rawPredict).
    Anthropic,
}

/// Turns provider stream events into canonical events.
pub trait StreamDecoder: Send {
    /// `event` is one complete frame (an SSE event); canonical events are appended to `out`.
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>);
}

/// Turns canonical events into the client's stream.
pub trait StreamEncoder: Send {
    fn encode(&mut self, event: &Event, out: &mut BytesMut);
    /// A failure spillway detected (upstream died, deadline): the client's own error event.
    fn failure(&mut self, code: &str, message: &str, out: &mut BytesMut);
}

pub fn stream_decoder(p: Protocol) -> Box<dyn StreamDecoder> {
    match p {
        Protocol::OpenAi => Box::<openai::Decoder>::default(),
        Protocol::Anthropic => Box::<anthropic::Decoder>::default(),
    }
}

pub fn stream_encoder(p: Protocol, include_usage: bool) -> Box<dyn StreamEncoder> {
    match p {
        Protocol::OpenAi => Box::new(openai::Encoder::new(include_usage)),
        Protocol::Anthropic => Box::<anthropic::Encoder>::default(),
    }
}

/// Seconds since the epoch, for the `created` fields.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
