//! The Anthropic Messages side of the fake: replies shaped like the recorded fixtures in
//! `tests/fixtures/anthropic/` (message_start, ping, content blocks, message_delta,
//! message_stop), tool use included.

use super::openai::{Answer, Choice, choose_tool, fragments};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct MessagesIn {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    tools: Vec<ToolIn>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    pub messages: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ToolIn {
    name: String,
    #[serde(default)]
    input_schema: Option<Value>,
}

impl MessagesIn {
    pub fn answer(&self, name: &str, chunks: u32, body_len: usize, seq: u64) -> Answer {
        let choice = match self.tool_choice.as_ref().and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("none") => Choice::None,
            Some("tool") => Choice::Named(
                self.tool_choice
                    .as_ref()
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => Choice::First,
        };
        Answer {
            id: format!("msg_fake{seq}"),
            model: self.model.clone(),
            name: name.to_owned(),
            chunks: chunks.max(1),
            tool_call: choose_tool(self.tools.iter().map(|t| (t.name.as_str(), t.input_schema.as_ref())), choice),
            prompt_tokens: (body_len as u64 / 4).max(1),
            include_usage: true,
            reasoning: false,
            cached_tokens: 0,
        }
    }
}

fn content_and_stop(a: &Answer) -> (Vec<Value>, &'static str) {
    match &a.tool_call {
        Some((name, args)) => {
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            (vec![json!({"type": "tool_use", "id": "toolu_fake0", "name": name, "input": input})], "tool_use")
        }
        None => {
            let text: String = (0..a.chunks).map(|i| a.word(i)).collect();
            (vec![json!({"type": "text", "text": text})], "end_turn")
        }
    }
}

/// A non-streaming `message`.
pub fn complete(a: &Answer) -> Bytes {
    let (content, stop) = content_and_stop(a);
    let body = json!({"id": a.id, "type": "message", "role": "assistant", "model": a.model, "content": content,
        "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": a.prompt_tokens, "output_tokens": a.chunks}});
    Bytes::from(body.to_string())
}

/// The stream's events as SSE: opening, content (which `drop_after` / `error_after` count) and
/// closing.
pub fn stream_events(a: &Answer) -> [Vec<Bytes>; 3] {
    stream_event_values(a).map(|part| {
        part.into_iter()
            .map(|v| Bytes::from(format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap_or_default())))
            .collect()
    })
}

/// The stream's events as JSON values (Bedrock carries them in event-stream `chunk` frames).
pub fn stream_event_values(a: &Answer) -> [Vec<Value>; 3] {
    let start = json!({"type": "message_start", "message": {"id": a.id, "type": "message", "role": "assistant",
        "model": a.model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": a.prompt_tokens, "output_tokens": 1}}});
    let mut opening = vec![start];
    let mut content = Vec::new();
    let stop = match &a.tool_call {
        Some((name, args)) => {
            opening.push(json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_fake0", "name": name, "input": {}}}));
            for piece in fragments(args, a.chunks as usize) {
                content.push(json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}));
            }
            "tool_use"
        }
        None => {
            opening.push(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            opening.push(json!({"type": "ping"}));
            for i in 0..a.chunks {
                content.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": a.word(i)}}));
            }
            "end_turn"
        }
    };
    let closing = vec![
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": a.chunks}}),
        json!({"type": "message_stop"}),
    ];
    [opening, content, closing]
}

/// An Anthropic error body for a status, shaped like the fixtures.
pub fn error_body(status: u16) -> Bytes {
    let (kind, message) = match status {
        400 => ("invalid_request_error", "fake: bad request"),
        401 => ("authentication_error", "fake: invalid x-api-key"),
        403 => ("permission_error", "fake: forbidden"),
        404 => ("not_found_error", "fake: model not found"),
        429 => ("rate_limit_error", "fake: rate limited"),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "fake: Internal server error"),
    };
    Bytes::from(
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}).to_string(),
    )
}

/// The mid-stream overload of fixture `messages_stream_midstream_overloaded.sse`.
pub fn stream_error_event() -> Bytes {
    let v = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    Bytes::from(format!("event: error\ndata: {v}\n\n"))
}
