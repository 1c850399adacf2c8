//! The contract of a client API: everything the request path needs to know about the API a
//! caller speaks, in one place per API — reading its request, translating it for endpoints of
//! another API, answering in it (a reply, a stream, an error), and telling how a stream of it
//! passed through ends. `proxy/` asks [`Protocol::api`] and never matches on the protocol.
//!
//! Its counterpart for endpoints is [`Wire`](super::Wire): request encode, reply and stream
//! decode, what a translation loses, and (in `upstream/`) errors and URLs per operation.

use super::{Protocol, StreamEncoder, anthropic, openai, responses};
use crate::canonical;
use crate::error::ApiError;
use crate::inbound;
use crate::outcome::Outcome;
use crate::sse::{self, EventKind};
use http::HeaderMap;
use serde_json::{Map, Value};

pub trait ClientApi: Sync {
    /// Reads and checks a request body: only what routing needs, the rest kept verbatim.
    fn parse(&self, bytes: &[u8], headers: &HeaderMap) -> Result<inbound::Request, ApiError>;
    /// The request in canonical form, for endpoints of another API.
    fn decode(&self, body: &Map<String, Value>) -> Result<canonical::Request, ApiError>;
    /// A translated whole reply; `c` is the request it answers.
    fn encode_reply(&self, r: &canonical::Response, c: Option<&canonical::Request>) -> Value;
    /// An encoder for a translated stream; `c` is the request it answers.
    fn stream_encoder(&self, include_usage: bool, c: Option<&canonical::Request>) -> Box<dyn StreamEncoder>;
    /// An error body: `kind` is OpenAI's `error.type`, `code` its machine-readable code.
    fn error_body(
        &self,
        status: http::StatusCode,
        kind: &str,
        code: Option<&str>,
        message: &str,
        param: Option<&str>,
    ) -> Value;
    /// Whether an SSE event of this API, passed through, ends the stream, and how.
    fn stream_end(&self, event: &[u8]) -> Option<Outcome>;
    /// Whether a caller that did not ask for usage in its stream may be sent it (and have it
    /// hidden again): only Chat Completions makes it optional.
    fn usage_is_optional(&self) -> bool {
        false
    }
}

impl Protocol {
    pub fn api(self) -> &'static dyn ClientApi {
        match self {
            Protocol::OpenAi => &ChatCompletions,
            Protocol::Anthropic => &Messages,
            Protocol::Responses => &Responses,
        }
    }
}

/// OpenAI Chat Completions (`POST /v1/chat/completions`).
pub struct ChatCompletions;

impl ClientApi for ChatCompletions {
    fn parse(&self, bytes: &[u8], _: &HeaderMap) -> Result<inbound::Request, ApiError> {
        inbound::openai::parse(bytes)
    }

    fn decode(&self, body: &Map<String, Value>) -> Result<canonical::Request, ApiError> {
        openai::decode_request(body)
    }

    fn encode_reply(&self, r: &canonical::Response, _: Option<&canonical::Request>) -> Value {
        openai::encode_response(r)
    }

    fn stream_encoder(&self, include_usage: bool, _: Option<&canonical::Request>) -> Box<dyn StreamEncoder> {
        Box::new(openai::Encoder::new(include_usage))
    }

    fn error_body(
        &self,
        _: http::StatusCode,
        kind: &str,
        code: Option<&str>,
        message: &str,
        param: Option<&str>,
    ) -> Value {
        openai::error_body(kind, code, message, param)
    }

    fn stream_end(&self, event: &[u8]) -> Option<Outcome> {
        match sse::classify(event) {
            EventKind::Done => Some(Outcome::Ok),
            EventKind::Error(_) => Some(Outcome::StreamError),
            EventKind::Data | EventKind::Other => None,
        }
    }

    fn usage_is_optional(&self) -> bool {
        true
    }
}

/// Anthropic Messages (`POST /v1/messages`).
pub struct Messages;

impl ClientApi for Messages {
    fn parse(&self, bytes: &[u8], headers: &HeaderMap) -> Result<inbound::Request, ApiError> {
        inbound::anthropic::parse(bytes, headers)
    }

    fn decode(&self, body: &Map<String, Value>) -> Result<canonical::Request, ApiError> {
        anthropic::decode_request(body)
    }

    fn encode_reply(&self, r: &canonical::Response, _: Option<&canonical::Request>) -> Value {
        anthropic::encode_response(r)
    }

    fn stream_encoder(&self, _: bool, _: Option<&canonical::Request>) -> Box<dyn StreamEncoder> {
        Box::<anthropic::Encoder>::default()
    }

    fn error_body(&self, status: http::StatusCode, _: &str, _: Option<&str>, message: &str, _: Option<&str>) -> Value {
        anthropic::error_body(anthropic::error_type(status.as_u16()), message)
    }

    fn stream_end(&self, event: &[u8]) -> Option<Outcome> {
        match sse::event_name(event) {
            Some(b"message_stop") => Some(Outcome::Ok),
            Some(b"error") => Some(Outcome::StreamError),
            _ => None,
        }
    }
}

/// The OpenAI Responses API (`POST /v1/responses`).
pub struct Responses;

impl ClientApi for Responses {
    fn parse(&self, bytes: &[u8], _: &HeaderMap) -> Result<inbound::Request, ApiError> {
        inbound::responses::parse(bytes)
    }

    fn decode(&self, body: &Map<String, Value>) -> Result<canonical::Request, ApiError> {
        responses::decode_request(body)
    }

    fn encode_reply(&self, r: &canonical::Response, c: Option<&canonical::Request>) -> Value {
        responses::encode_response(r, c.map_or(&[], |c| c.namespaces.as_slice()))
    }

    fn stream_encoder(&self, _: bool, c: Option<&canonical::Request>) -> Box<dyn StreamEncoder> {
        Box::new(responses::Encoder::new(c.map_or_else(Vec::new, |c| c.namespaces.clone())))
    }

    fn error_body(
        &self,
        _: http::StatusCode,
        kind: &str,
        code: Option<&str>,
        message: &str,
        param: Option<&str>,
    ) -> Value {
        openai::error_body(kind, code, message, param)
    }

    fn stream_end(&self, event: &[u8]) -> Option<Outcome> {
        match sse::event_name(event) {
            Some(b"response.completed" | b"response.incomplete") => Some(Outcome::Ok),
            Some(b"response.failed" | b"error") => Some(Outcome::StreamError),
            _ => None,
        }
    }
}
