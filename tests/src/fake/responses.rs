//! The OpenAI Responses API side of the fake (`POST /v1/responses`, Azure's
//! `/openai/v1/responses`): replies and typed event streams shaped as the `openai` SDK's
//! `types/responses` define them, a function call included when the request offers tools.

use super::openai::{Answer, Choice, choose_tool, fragments};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct ResponsesIn {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    pub input: Option<Value>,
}

impl ResponsesIn {
    pub fn answer(&self, name: &str, chunks: u32, body_len: usize, seq: u64) -> Answer {
        let functions = self.tools.iter().filter(|t| t.get("type").and_then(Value::as_str) == Some("function"));
        let choice = match &self.tool_choice {
            Some(Value::String(s)) if s == "none" => Choice::None,
            Some(Value::Object(o)) => match o.get("name").and_then(Value::as_str) {
                Some(n) => Choice::Named(n.to_owned()),
                None => Choice::None,
            },
            _ => Choice::First,
        };
        let tools = functions.filter_map(|t| Some((t.get("name")?.as_str()?, t.get("parameters"))));
        Answer {
            id: format!("resp_fake{seq}"),
            model: self.model.clone(),
            name: name.to_owned(),
            chunks: chunks.max(1),
            tool_call: choose_tool(tools, choice),
            prompt_tokens: (body_len as u64 / 4).max(1),
            include_usage: true,
            reasoning: false,
            cached_tokens: 0,
        }
    }
}

fn usage(a: &Answer) -> Value {
    let output = u64::from(a.chunks);
    json!({"input_tokens": a.prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
           "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": a.prompt_tokens + output})
}

fn output(a: &Answer) -> Vec<Value> {
    match &a.tool_call {
        Some((name, args)) => vec![json!({"type": "function_call", "id": "fc_fake0", "call_id": "call_fake0",
            "name": name, "arguments": args, "status": "completed"})],
        None => {
            let text: String = (0..a.chunks).map(|i| a.word(i)).collect();
            vec![json!({"type": "message", "id": "msg_fake0", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]})]
        }
    }
}

fn response(a: &Answer, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({"id": a.id, "object": "response", "created_at": 1_700_000_000, "status": status, "model": a.model,
           "error": null, "incomplete_details": null, "instructions": null, "metadata": {}, "output": output,
           "parallel_tool_calls": true, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
           "store": false, "usage": usage})
}

/// A non-streaming `response`.
pub fn complete(a: &Answer) -> Bytes {
    Bytes::from(response(a, "completed", output(a), usage(a)).to_string())
}

/// The stream's events: opening, content (which `drop_after` / `error_after` count) and
/// closing, numbered in order.
pub fn stream_events(a: &Answer) -> [Vec<Bytes>; 3] {
    let mut seq = 0u64;
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = kind.into();
        data["sequence_number"] = seq.into();
        seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    };
    let created = response(a, "in_progress", Vec::new(), Value::Null);
    let mut opening = vec![
        event("response.created", json!({"response": created})),
        event("response.in_progress", json!({"response": created})),
    ];
    let mut content = Vec::new();
    let mut closing = Vec::new();
    match &a.tool_call {
        Some((name, args)) => {
            let item = json!({"type": "function_call", "id": "fc_fake0", "call_id": "call_fake0", "name": name,
                "arguments": "", "status": "in_progress"});
            opening.push(event("response.output_item.added", json!({"output_index": 0, "item": item})));
            for piece in fragments(args, a.chunks as usize) {
                content.push(event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_fake0", "output_index": 0, "delta": piece}),
                ));
            }
            closing.push(event(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_fake0", "output_index": 0, "arguments": args}),
            ));
        }
        None => {
            let item = json!({"type": "message", "id": "msg_fake0", "status": "in_progress", "role": "assistant", "content": []});
            opening.push(event("response.output_item.added", json!({"output_index": 0, "item": item})));
            opening.push(event(
                "response.content_part.added",
                json!({"item_id": "msg_fake0", "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            for i in 0..a.chunks {
                content.push(event(
                    "response.output_text.delta",
                    json!({"item_id": "msg_fake0", "output_index": 0, "content_index": 0, "delta": a.word(i), "logprobs": []}),
                ));
            }
            let text: String = (0..a.chunks).map(|i| a.word(i)).collect();
            closing.push(event(
                "response.output_text.done",
                json!({"item_id": "msg_fake0", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
        }
    }
    let done = output(a).remove(0);
    closing.push(event("response.output_item.done", json!({"output_index": 0, "item": done})));
    let finished = response(a, "completed", output(a), usage(a));
    closing.push(event("response.completed", json!({"response": finished})));
    [opening, content, closing]
}

/// The `error` event a failing Responses stream sends after HTTP 200.
pub fn stream_error_event() -> Bytes {
    Bytes::from_static(
        b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null,\"sequence_number\":99}\n\n",
    )
}
