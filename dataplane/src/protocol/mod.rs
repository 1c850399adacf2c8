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
//!
//! Two contracts put them to use: [`client::ClientApi`], what the request path needs of the API
//! a caller speaks (one implementation per client API), and [`wire::WireApi`], what it needs of
//! the wire an endpoint speaks (one implementation per wire).

pub mod anthropic;
pub mod bedrock;
pub mod client;
pub mod count_tokens;
pub mod embeddings;
mod error_reply;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod wire;

use crate::canonical::{self, Event};
use crate::sse::{self, SseSplitter};
use bytes::BytesMut;

/// The API a client or an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI Chat Completions (OpenAI, Azure OpenAI, OpenAI-compatible servers).
    OpenAi,
    /// Anthropic Messages (Anthropic; the same body on Bedrock invoke and Vertex rawPredict).
    Anthropic,
    /// The OpenAI Responses API (OpenAI, Azure OpenAI, compatible servers that speak it).
    Responses,
}

/// What an endpoint speaks on the wire: its request body and its reply framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions JSON and SSE.
    OpenAi,
    /// OpenAI Responses JSON and typed SSE events.
    OpenAiResponses,
    /// Anthropic Messages JSON and SSE.
    Anthropic,
    /// Bedrock Converse JSON and event-stream frames.
    BedrockConverse,
    /// Bedrock InvokeModel: Anthropic bodies, replies in event-stream `chunk` frames.
    BedrockInvoke,
    /// Vertex AI Gemini generateContent JSON and SSE (CRLF, no end marker).
    VertexGemini,
    /// Claude on Vertex AI: Anthropic bodies and SSE (rawPredict / streamRawPredict).
    VertexAnthropic,
}

impl Wire {
    /// Whether a client of `client` can be passed through to this wire untranslated: its own
    /// body sent (with the model, stream flag, version and betas moved where the provider wants
    /// them), so fields spillway does not know still work.
    pub fn passes_through(self, client: Protocol) -> bool {
        matches!(
            (self, client),
            (Wire::OpenAi, Protocol::OpenAi)
                | (Wire::OpenAiResponses, Protocol::Responses)
                | (Wire::Anthropic | Wire::VertexAnthropic | Wire::BedrockInvoke, Protocol::Anthropic)
        )
    }

    /// Whether this wire's replies, errors and stream framing are `client`'s own, to forward
    /// as they are. Bedrock InvokeModel carries Anthropic's replies, but its errors are AWS's and
    /// its stream is event-stream frames.
    pub fn replies_natively(self, client: Protocol) -> bool {
        self.passes_through(client) && self != Wire::BedrockInvoke
    }

    /// The request body in this wire's format, from the canonical form (see
    /// [`wire::WireApi::encode_request`]).
    pub fn encode_request(
        self,
        c: &canonical::Request,
        model: &str,
        max_tokens_field: openai::MaxTokensField,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        self.api().encode_request(c, model, max_tokens_field)
    }

    /// Moves what an Anthropic body carries to where this wire wants it, for translated and
    /// passed-through bodies alike: on Bedrock InvokeModel and Vertex the model is in the URL
    /// and `anthropic_version` in the body; on InvokeModel the operation decides streaming and
    /// the caller's `anthropic-beta` flags are a body list (Vertex takes them as the header, and
    /// keeps `stream` in the body).
    pub fn place_anthropic_fields(self, body: &mut serde_json::Map<String, serde_json::Value>, betas: Option<&str>) {
        match self {
            Wire::VertexAnthropic => {
                body.remove("model");
                body.insert("anthropic_version".into(), anthropic::VERTEX_VERSION.into());
            }
            Wire::BedrockInvoke => {
                body.remove("model");
                body.remove("stream");
                body.insert("anthropic_version".into(), bedrock::INVOKE_ANTHROPIC_VERSION.into());
                if let Some(list) = betas {
                    let list: Vec<serde_json::Value> =
                        list.split(',').map(str::trim).filter(|b| !b.is_empty()).map(Into::into).collect();
                    body.insert("anthropic_beta".into(), list.into());
                }
            }
            _ => {}
        }
    }

    /// A provider reply body → canonical; `None` if it is not a reply of this wire.
    pub fn decode_response(self, body: &[u8], model: &str) -> Option<canonical::Response> {
        self.api().decode_response(body, model)
    }

    /// A decoder for this wire's stream that holds at most `max_frame` bytes of an unfinished
    /// frame (SSE event or event-stream message); a longer one is a corrupt stream.
    pub fn stream_decoder(self, model: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        self.api().stream_decoder(model, max_frame)
    }
}

/// The default cap on one upstream frame (an SSE event, an event-stream message, what a stream
/// sends before its first token, or a whole non-streaming reply): far above any real event, far below the 64 Mi the
/// injected sidecar is given (`spillway-proxy --max-upstream-frame-bytes`).
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// Turns a provider's stream body into canonical events. Each decoder does its own framing
/// (SSE, AWS event-stream), so it is fed raw body bytes as they arrive.
pub trait StreamDecoder: Send {
    /// Appends the events of every frame completed by `bytes`. An error means the stream is
    /// corrupt (a bad event-stream CRC, say) and must be treated as failed.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String>;
}

/// Decodes one SSE event of a protocol.
pub trait SseEventDecoder: Send {
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>);
}

/// SSE framing around an event decoder.
pub struct Sse<D> {
    splitter: SseSplitter,
    inner: D,
}

impl<D> Sse<D> {
    pub fn new(inner: D, max_event: usize) -> Self {
        Sse { splitter: SseSplitter::new(max_event), inner }
    }
}

impl<D: SseEventDecoder> StreamDecoder for Sse<D> {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        self.splitter.push(bytes);
        if let Some(block) = self.splitter.take_bounded()? {
            for event in sse::events(&block) {
                self.inner.decode(event, out);
            }
        }
        Ok(())
    }
}

/// Turns canonical events into the client's stream.
pub trait StreamEncoder: Send {
    fn encode(&mut self, event: &Event, out: &mut BytesMut);
    /// A failure spillway detected (upstream died, deadline): the client's own error event.
    fn failure(&mut self, code: &str, message: &str, out: &mut BytesMut);
}

/// The encoder of `p`'s stream, for a request of no particular shape (see
/// [`client::ClientApi::stream_encoder`]).
pub fn stream_encoder(p: Protocol, include_usage: bool) -> Box<dyn StreamEncoder> {
    p.api().stream_encoder(include_usage, None)
}

/// Appends a turn `{"role": role, key: content}`, merged into the previous one when the role
/// repeats: Anthropic, Bedrock and Gemini want strictly alternating turns.
pub(crate) fn push_turn(turns: &mut Vec<serde_json::Value>, role: &str, key: &str, content: Vec<serde_json::Value>) {
    if content.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role)
        && let Some(serde_json::Value::Array(prev)) = last.get_mut(key)
    {
        prev.extend(content);
        return;
    }
    turns.push(serde_json::json!({"role": role, key: content}));
}

/// The id a translated reply carries: the provider's, in the form the caller's protocol uses
/// (`chatcmpl-…`, `msg_…`), or a fresh one where the provider gives none (Converse), so that no
/// two replies share an id.
pub(crate) fn reply_id(prefix: &str, upstream: &str) -> String {
    if upstream.starts_with(prefix) {
        return upstream.to_owned();
    }
    if !upstream.is_empty() {
        return format!("{prefix}{upstream}");
    }
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend((0..24).map(|_| char::from(ALNUM[fastrand::usize(..ALNUM.len())])));
    id
}

/// Seconds since the epoch, for the `created` fields.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod roundtrip;

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod fidelity;
