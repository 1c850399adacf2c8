//! The OpenAI Chat Completions side of the fake: replies shaped like the recorded fixtures in
//! `tests/fixtures/openai/` (role chunk, content chunks, finish chunk, optional usage chunk,
//! `[DONE]`), tool calls included.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct ChatIn {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Vec<ToolIn>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    pub messages: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ToolIn {
    #[serde(default)]
    function: Option<FunctionIn>,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

/// What the fake will answer, decided once per request.
pub struct Answer {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) name: String,
    pub(super) chunks: u32,
    /// The tool call to make: name and JSON arguments.
    pub(super) tool_call: Option<(String, String)>,
    pub(super) prompt_tokens: u64,
    pub(super) include_usage: bool,
    /// The request asked for reasoning: the reply reasons first (Converse, Gemini).
    pub(super) reasoning: bool,
    /// Prompt tokens read from the cache (the request set cache points).
    pub(super) cached_tokens: u64,
}

impl Answer {
    pub fn new(req: &ChatIn, name: &str, chunks: u32, body_len: usize, seq: u64) -> Answer {
        Answer {
            id: format!("chatcmpl-fake{seq}"),
            model: req.model.clone(),
            name: name.to_owned(),
            chunks: chunks.max(1),
            tool_call: choose_tool(
                req.tools.iter().filter_map(|t| t.function.as_ref()).map(|f| (f.name.as_str(), f.parameters.as_ref())),
                match &req.tool_choice {
                    Some(Value::String(s)) if s == "none" => Choice::None,
                    Some(Value::Object(o)) => {
                        match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                            Some(n) => Choice::Named(n.to_owned()),
                            None => Choice::None,
                        }
                    }
                    _ => Choice::First,
                },
            ),
            prompt_tokens: (body_len as u64 / 4).max(1),
            include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
            reasoning: false,
            cached_tokens: 0,
        }
    }

    pub(super) fn word(&self, i: u32) -> String {
        if i == 0 { format!("Hello from {}.", self.name) } else { format!(" w{i}") }
    }

    fn usage(&self) -> Value {
        let completion = u64::from(self.chunks);
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
               "total_tokens": self.prompt_tokens + completion})
    }

    /// A non-streaming `chat.completion`.
    pub fn complete(&self) -> Bytes {
        let (message, finish) = match &self.tool_call {
            Some((name, args)) => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_fake0", "type": "function", "function": {"name": name, "arguments": args}}]}),
                "tool_calls",
            ),
            None => {
                let text: String = (0..self.chunks).map(|i| self.word(i)).collect();
                (json!({"role": "assistant", "content": text, "refusal": null}), "stop")
            }
        };
        let body = json!({"id": self.id, "object": "chat.completion", "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": self.usage(), "system_fingerprint": null});
        Bytes::from(body.to_string())
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": self.model, "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    }

    /// The stream's events: opening, content (which `drop_after` / `error_after` count) and
    /// closing.
    pub fn stream_events(&self) -> [Vec<Bytes>; 3] {
        let mut opening = Vec::new();
        let mut content = Vec::new();
        let finish = match &self.tool_call {
            Some((name, args)) => {
                opening.push(self.chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_fake0",
                        "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
                // Split the arguments into fragments, as providers do.
                let parts = (self.chunks as usize).clamp(1, args.len().max(1));
                let step = args.len().div_ceil(parts).max(1);
                let mut rest = args.as_str();
                while !rest.is_empty() {
                    let cut = (step..=rest.len()).find(|&i| rest.is_char_boundary(i)).unwrap_or(rest.len());
                    let (piece, tail) = rest.split_at(cut);
                    content.push(
                        self.chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None),
                    );
                    rest = tail;
                }
                "tool_calls"
            }
            None => {
                opening.push(self.chunk(json!({"role": "assistant", "content": "", "refusal": null}), None));
                for i in 0..self.chunks {
                    content.push(self.chunk(json!({"content": self.word(i)}), None));
                }
                "stop"
            }
        };
        let mut closing = vec![self.chunk(json!({}), Some(finish))];
        if self.include_usage {
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": self.model, "system_fingerprint": null, "choices": [], "usage": self.usage()});
            closing.push(Bytes::from(format!("data: {c}\n\n")));
        }
        closing.push(Bytes::from_static(b"data: [DONE]\n\n"));
        [opening, content, closing]
    }
}

pub(super) enum Choice {
    None,
    First,
    Named(String),
}

/// The tool the fake "decides" to call: the named one, else the first, unless told none.
/// Arguments fill the schema's required properties with placeholder values.
pub(super) fn choose_tool<'a>(
    tools: impl Iterator<Item = (&'a str, Option<&'a Value>)>,
    choice: Choice,
) -> Option<(String, String)> {
    let tools: Vec<(&str, Option<&Value>)> = tools.collect();
    let (name, params) = match choice {
        Choice::None => return None,
        Choice::Named(n) => *tools.iter().find(|(t, _)| *t == n)?,
        Choice::First => *tools.first()?,
    };
    let mut args = serde_json::Map::new();
    let required = params.and_then(|p| p.get("required")).and_then(Value::as_array).cloned().unwrap_or_default();
    for key in required.iter().filter_map(Value::as_str) {
        let ty = params.and_then(|p| p.pointer(&format!("/properties/{key}/type"))).and_then(Value::as_str);
        let v = match ty {
            Some("number" | "integer") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!(format!("fake-{key}")),
        };
        args.insert(key.to_owned(), v);
    }
    Some((name.to_owned(), Value::Object(args).to_string()))
}

/// Splits `s` into about `parts` pieces on character boundaries, as providers fragment
/// tool-call arguments.
pub(super) fn fragments(s: &str, parts: usize) -> Vec<&str> {
    let parts = parts.clamp(1, s.len().max(1));
    let step = s.len().div_ceil(parts).max(1);
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let cut = (step..=rest.len()).find(|&i| rest.is_char_boundary(i)).unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

/// An OpenAI error body for a status, shaped like the fixtures.
pub fn error_body(status: u16) -> Bytes {
    let (kind, code, message) = match status {
        400 => ("invalid_request_error", Some("invalid_value"), "fake: bad request"),
        401 => ("invalid_request_error", Some("invalid_api_key"), "fake: Incorrect API key provided"),
        403 => ("invalid_request_error", Some("unsupported_country_region_territory"), "fake: forbidden"),
        404 => ("invalid_request_error", Some("model_not_found"), "fake: The model does not exist"),
        429 => ("tokens", Some("rate_limit_exceeded"), "fake: Rate limit reached"),
        503 => ("service_unavailable_error", Some("server_is_overloaded"), "fake: overloaded"),
        _ => ("server_error", None, "fake: The server had an error while processing your request."),
    };
    Bytes::from(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string())
}

/// The error event a failing OpenAI stream sends after HTTP 200 (fixture
/// `chat_stream_midstream_error.sse`).
pub fn stream_error_event() -> Bytes {
    Bytes::from_static(
        b"data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
    )
}
