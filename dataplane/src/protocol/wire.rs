//! The contract of a provider wire: what an endpoint that speaks it is sent (a translated
//! request, and what that translation loses), and how its replies, streams and errors are read.
//! One implementation per wire; [`Wire::api`](super::Wire::api) picks it. Its counterpart for
//! callers is [`ClientApi`](super::client::ClientApi).

use super::{Sse, Wire};
use super::{StreamDecoder, anthropic, bedrock, gemini, openai, responses};
use crate::canonical::{self, Unrepresented};
use crate::upstream::failure::{self, AttemptFailure};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

pub trait WireApi: Sync {
    /// The body for a request of another API, translated from its canonical form, as sent to an
    /// endpoint serving `model`; `Err` names what this wire cannot carry.
    fn encode_request(
        &self,
        c: &canonical::Request,
        model: &str,
        max_tokens_field: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String>;
    /// The fields of `c` this wire has no place for (beyond those the canonical form lost).
    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str));
    /// A whole reply → canonical; `None` if it is not a reply of this wire.
    fn decode_response(&self, body: &[u8], model: &str) -> Option<canonical::Response>;
    /// A decoder for its stream, holding at most `max_frame` bytes of an unfinished frame.
    fn stream_decoder(&self, model: &str, max_frame: usize) -> Box<dyn StreamDecoder>;
    /// The `Content-Type` its streams come in.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// An error reply in the one failure vocabulary.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure;
}

impl Wire {
    pub fn api(self) -> &'static dyn WireApi {
        match self {
            Wire::OpenAi => &ChatCompletionsWire,
            Wire::OpenAiResponses => &ResponsesWire,
            Wire::Anthropic => &MessagesWire(Wire::Anthropic),
            Wire::BedrockInvoke => &MessagesWire(Wire::BedrockInvoke),
            Wire::VertexAnthropic => &MessagesWire(Wire::VertexAnthropic),
            Wire::BedrockConverse => &ConverseWire,
            Wire::VertexGemini => &GeminiWire,
        }
    }

    /// What a translation of `c` to this wire loses: the client's fields the canonical form does
    /// not carry, and those this wire has no place for.
    pub fn losses(self, c: &canonical::Request) -> Vec<Unrepresented> {
        let mut out = c.unrepresented.clone();
        self.api().losses(c, &mut |present, field| {
            if present {
                out.push(Unrepresented::tuning(field));
            }
        });
        out
    }
}

/// OpenAI Chat Completions (OpenAI, Azure OpenAI, compatible servers).
struct ChatCompletionsWire;

impl WireApi for ChatCompletionsWire {
    fn encode_request(
        &self,
        c: &canonical::Request,
        model: &str,
        field: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String> {
        Ok(openai::encode_request(c, model, field))
    }

    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str)) {
        lose(c.top_k.is_some(), "top_k");
        lose(c.caches(), "cache_control");
        lose(c.reasoning.is_some(), "thinking");
    }

    fn decode_response(&self, body: &[u8], _: &str) -> Option<canonical::Response> {
        openai::decode_response(body)
    }

    fn stream_decoder(&self, _: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        Box::new(Sse::new(openai::Decoder::default(), max_frame))
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
        failure::classify_openai(status, headers, body)
    }
}

/// The OpenAI Responses API.
struct ResponsesWire;

impl WireApi for ResponsesWire {
    fn encode_request(
        &self,
        c: &canonical::Request,
        model: &str,
        _: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String> {
        Ok(responses::encode_request(c, model))
    }

    // The Responses API has no stop sequences.
    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str)) {
        lose(!c.stop.is_empty(), "stop");
        lose(c.top_k.is_some(), "top_k");
        lose(c.caches(), "cache_control");
    }

    fn decode_response(&self, body: &[u8], _: &str) -> Option<canonical::Response> {
        responses::decode_response(body)
    }

    fn stream_decoder(&self, _: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        Box::new(Sse::new(responses::Decoder::default(), max_frame))
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
        failure::classify_openai(status, headers, body)
    }
}

/// Anthropic Messages bodies: Anthropic itself, Bedrock InvokeModel (event-stream `chunk`s,
/// AWS errors) and Claude on Vertex (Anthropic or Google errors).
struct MessagesWire(Wire);

impl WireApi for MessagesWire {
    fn encode_request(
        &self,
        c: &canonical::Request,
        model: &str,
        _: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String> {
        Ok(match self.0 {
            Wire::Anthropic => anthropic::encode_request(c, Some(model)),
            wire => {
                let mut body = anthropic::encode_request(c, None);
                wire.place_anthropic_fields(&mut body, None);
                body
            }
        })
    }

    // The Messages API has no sampling parameters (the anthropic SDK's request types).
    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str)) {
        let room = c.max_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS) > anthropic::MIN_THINKING_BUDGET;
        lose(c.reasoning.is_some_and(|r| r.budget_tokens.is_some()) && !room, "thinking");
        lose(c.temperature.is_some(), "temperature");
        lose(c.top_p.is_some(), "top_p");
        lose(c.top_k.is_some(), "top_k");
    }

    fn decode_response(&self, body: &[u8], _: &str) -> Option<canonical::Response> {
        anthropic::decode_response(body)
    }

    fn stream_decoder(&self, _: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        match self.0 {
            Wire::BedrockInvoke => Box::new(bedrock::InvokeStream::new(max_frame)),
            _ => Box::new(Sse::new(anthropic::Decoder::default(), max_frame)),
        }
    }

    fn stream_content_type(&self) -> &'static str {
        match self.0 {
            Wire::BedrockInvoke => "application/vnd.amazon.eventstream",
            _ => "text/event-stream",
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
        match self.0 {
            Wire::BedrockInvoke => failure::classify_bedrock(status, headers, body),
            // Model-side errors of Claude on Vertex come in Anthropic's shape, front-door ones
            // (quota, auth, URL) in Google's.
            Wire::VertexAnthropic if !failure::anthropic_shaped(&body) => {
                failure::classify_google(status, headers, body)
            }
            _ => failure::classify_anthropic(status, headers, body),
        }
    }
}

/// Bedrock Converse.
struct ConverseWire;

impl WireApi for ConverseWire {
    fn encode_request(
        &self,
        c: &canonical::Request,
        _: &str,
        _: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String> {
        bedrock::encode_converse(c)
    }

    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str)) {
        lose(c.no_parallel_tools && !c.tools.is_empty(), "parallel_tool_calls");
        lose(c.user.as_deref().is_some_and(|u| !bedrock::metadata_value(u)), "user");
    }

    fn decode_response(&self, body: &[u8], model: &str) -> Option<canonical::Response> {
        bedrock::decode_response(body, model)
    }

    fn stream_decoder(&self, model: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        Box::new(bedrock::ConverseStream::new(model, max_frame))
    }

    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
        failure::classify_bedrock(status, headers, body)
    }
}

/// Vertex AI Gemini.
struct GeminiWire;

impl WireApi for GeminiWire {
    fn encode_request(
        &self,
        c: &canonical::Request,
        _: &str,
        _: openai::MaxTokensField,
    ) -> Result<Map<String, Value>, String> {
        gemini::encode_request(c)
    }

    // Gemini caches prompts by itself, without breakpoints, and takes the whole tool schema
    // without promising calls will match it.
    fn losses(&self, c: &canonical::Request, lose: &mut dyn FnMut(bool, &str)) {
        lose(c.no_parallel_tools && !c.tools.is_empty(), "parallel_tool_calls");
        lose(c.user.is_some(), "user");
        lose(c.caches(), "cache_control");
        lose(c.tools.iter().any(|t| t.strict), "strict");
    }

    fn decode_response(&self, body: &[u8], model: &str) -> Option<canonical::Response> {
        gemini::decode_response(body, model)
    }

    fn stream_decoder(&self, model: &str, max_frame: usize) -> Box<dyn StreamDecoder> {
        Box::new(Sse::new(gemini::Decoder::new(model), max_frame))
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
        failure::classify_google(status, headers, body)
    }
}
