//! OpenAI Chat Completions ↔ canonical.

use super::{SseEventDecoder, StreamEncoder, unix_now};
use crate::canonical::{self as c, Event, Image, Message, Part, Role, StopReason, ToolChoice, Usage};
use crate::error::ApiError;
use crate::sse;
use bytes::BytesMut;
use serde_json::{Map, Value, json};

fn bad(param: &'static str, message: String) -> ApiError {
    ApiError::invalid_request("invalid_value", Some(param), message)
}

/// The request fields the canonical form carries; any other is reported when translated.
const CARRIED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "user",
    "stop",
    "parallel_tool_calls",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
];

/// What losing a field the canonical form does not carry costs: the fields that ask for a
/// different answer (several choices, log-probabilities, a format, audio) change its meaning,
/// unless their value asks for nothing; the rest only tune it.
fn loss(field: &str, v: &Value) -> Option<c::Loss> {
    let asks = match field {
        "n" => v.as_u64().is_some_and(|n| n > 1),
        "logprobs" => v.as_bool() == Some(true),
        "top_logprobs" => v.as_u64().is_some_and(|n| n > 0),
        "modalities" => v.as_array().is_some_and(|m| m.iter().any(|x| x != "text")),
        "audio" | "functions" | "function_call" | "web_search_options" => true,
        _ => return Some(c::Loss::Tuning),
    };
    asks.then_some(c::Loss::Meaning)
}

/// A client's checked request body → canonical.
pub fn decode_request(body: &Map<String, Value>) -> Result<c::Request, ApiError> {
    let mut req = c::Request {
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        unrepresented: c::unrepresented(body, CARRIED, loss),
        ..Default::default()
    };
    req.include_usage = body.pointer_get("stream_options", "include_usage").and_then(Value::as_bool).unwrap_or(false);
    req.max_tokens = body.get("max_completion_tokens").or(body.get("max_tokens")).and_then(Value::as_u64);
    req.temperature = body.get("temperature").and_then(Value::as_f64);
    req.top_p = body.get("top_p").and_then(Value::as_f64);
    req.user = body.get("user").and_then(Value::as_str).map(str::to_owned);
    req.stop = match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    req.no_parallel_tools = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
    req.reasoning = effort(body.get("reasoning_effort"), "reasoning_effort", "reasoning_effort")?;
    match body.get("response_format") {
        None | Some(Value::Null) => {}
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => req.format = Some(c::OutputFormat::JsonObject),
            Some("json_schema") => {
                let spec = f.get("json_schema").unwrap_or(&Value::Null);
                req.format = Some(json_schema(spec, "response_format", "response_format.json_schema")?);
            }
            // A format this form does not know: only an endpoint of the caller's own protocol may answer.
            _ => req.unrepresented.push(c::Unrepresented::meaning("response_format")),
        },
    }
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = t.get("function").ok_or_else(|| bad("tools", format!("tools[{i}] has no `function`")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("tools", format!("tools[{i}].function.name is required")))?;
        req.tools.push(c::Tool {
            name: name.to_owned(),
            description: f.get("description").and_then(Value::as_str).map(str::to_owned),
            schema: f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: f.get("strict").and_then(Value::as_bool).unwrap_or(false),
            cache: None,
        });
    }
    req.tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any,
            _ => ToolChoice::Auto,
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(n) => Some(ToolChoice::Tool(n.to_owned())),
            None => return Err(bad("tool_choice", "tool_choice object needs function.name".into())),
        },
    };
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => req.system.extend(text_parts(content)),
            "user" => push(&mut req.messages, Role::User, user_parts(content, i)?),
            "assistant" => {
                let mut parts = text_parts(content);
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|e| {
                            bad(
                                "messages",
                                format!("messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e}"),
                            )
                        })?
                    };
                    parts.push(Part::ToolUse {
                        id: call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        name: call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        input,
                    });
                }
                push(&mut req.messages, Role::Assistant, parts);
            }
            "tool" | "function" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let part = Part::ToolResult {
                    tool_use_id: id,
                    content: vec![Part::Text(content_text(content))],
                    is_error: false,
                };
                push(&mut req.messages, Role::User, vec![part]);
            }
            other => return Err(bad("messages", format!("messages[{i}].role `{other}` is not supported"))),
        }
    }
    Ok(req)
}

/// A reasoning effort level (`none` asks for none); `param` and `at` name the field in errors.
/// The Responses API spells it `reasoning.effort`.
pub(super) fn effort(v: Option<&Value>, param: &'static str, at: &str) -> Result<Option<c::Reasoning>, ApiError> {
    match v.and_then(Value::as_str) {
        None | Some("none") => Ok(None),
        Some(e) => match c::Effort::parse(e) {
            Some(effort) => Ok(Some(c::Reasoning { budget_tokens: None, effort: Some(effort) })),
            None => Err(bad(param, format!("{at} `{e}` is not one of none, minimal, low, medium, high, xhigh"))),
        },
    }
}

/// A JSON-schema output format from the object holding `name`, `schema` and `strict`; `param`
/// and `at` name it in errors. The Responses API puts that object in `text.format`.
pub(super) fn json_schema(spec: &Value, param: &'static str, at: &str) -> Result<c::OutputFormat, ApiError> {
    let name = spec.get("name").and_then(Value::as_str).unwrap_or("output").to_owned();
    let Some(schema) = spec.get("schema").filter(|s| s.is_object()) else {
        return Err(bad(param, format!("{at}.schema must be an object")));
    };
    let strict = spec.get("strict").and_then(Value::as_bool).unwrap_or(false);
    Ok(c::OutputFormat::JsonSchema { name, schema: schema.clone(), strict })
}

/// Consecutive turns of one role become one turn: OpenAI sends each tool result as its own
/// message, Anthropic wants them together in one user turn.
pub(super) fn push(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(parts),
        _ => messages.push(Message { role, content: parts }),
    }
}

/// The text of a message's content, one part per text (or refusal) part the client sent, so
/// that parts are never run together.
fn text_parts(content: &Value) -> Vec<Part> {
    match content {
        Value::String(s) if !s.is_empty() => vec![Part::Text(s.clone())],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").or(p.get("refusal")).and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .map(|t| Part::Text(t.to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

fn user_parts(content: &Value, i: usize) -> Result<Vec<Part>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    Some(Ok(Part::Text(p.get("text").and_then(Value::as_str).unwrap_or_default().to_owned())))
                }
                Some("image_url") => {
                    let url = p.pointer("/image_url/url").and_then(Value::as_str).unwrap_or_default();
                    Some(Ok(Part::Image(image_from_url(url))))
                }
                Some("file") => {
                    let file = p.get("file").unwrap_or(&Value::Null);
                    let data_url = file.get("file_data").and_then(Value::as_str).unwrap_or_default();
                    match image_from_url(data_url) {
                        Image::Base64 { media_type, data } => Some(Ok(Part::Document {
                            media_type,
                            data,
                            name: file.get("filename").and_then(Value::as_str).map(str::to_owned),
                        })),
                        // An uploaded file's id means something to OpenAI only.
                        Image::Url(_) => Some(Err(bad(
                            "messages",
                            format!("messages[{i}] names an uploaded file, which only OpenAI endpoints can read; send its `file_data` instead"),
                        ))),
                    }
                }
                Some(other) => Some(Err(bad(
                    "messages",
                    format!("messages[{i}] has a `{other}` part, which this endpoint's protocol cannot carry"),
                ))),
                None => None,
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// `data:` URIs become inline images, anything else stays a URL.
pub(super) fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return Image::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    Image::Url(url.to_owned())
}

/// How the endpoint spells the output limit: OpenAI's own API wants `max_completion_tokens`
/// (reasoning models reject `max_tokens`); most OpenAI-compatible servers know `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxCompletionTokens,
    MaxTokens,
}

/// Canonical → an OpenAI request body for `model`.
pub fn encode_request(req: &c::Request, model: &str, max_field: MaxTokensField) -> Map<String, Value> {
    let mut messages = Vec::new();
    for p in &req.system {
        if let Part::Text(s) = p {
            messages.push(json!({"role": "system", "content": s}));
        }
    }
    for m in &req.messages {
        match m.role {
            Role::User => {
                let mut parts = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult { tool_use_id, content, is_error } => {
                            let mut text = c::text_of(content);
                            if *is_error && !text.starts_with("Error") {
                                text = format!("Error: {text}");
                            }
                            messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
                        }
                        Part::Text(t) => parts.push(json!({"type": "text", "text": t})),
                        Part::Image(img) => {
                            parts.push(json!({"type": "image_url", "image_url": {"url": image_url(img)}}))
                        }
                        Part::Document { media_type, data, name } => parts.push(json!({"type": "file", "file": {
                            "file_data": format!("data:{media_type};base64,{data}"),
                            "filename": name.as_deref().unwrap_or("document")}})),
                        // OpenAI caches prompts on its own; a breakpoint is reported dropped.
                        // Reasoning is the assistant's, never in a user turn.
                        Part::ToolUse { .. }
                        | Part::CachePoint(_)
                        | Part::Thinking { .. }
                        | Part::RedactedThinking(_) => {}
                    }
                }
                match parts.as_slice() {
                    [] => {}
                    [only] if only["type"] == "text" => messages.push(json!({"role": "user", "content": only["text"]})),
                    _ => messages.push(json!({"role": "user", "content": parts})),
                }
            }
            Role::Assistant => {
                let texts: Vec<&str> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                // One text part per block: parts are not run together.
                let content = match texts.as_slice() {
                    [] => Value::Null,
                    [one] => Value::String((*one).to_owned()),
                    many => many.iter().map(|t| json!({"type": "text", "text": t})).collect(),
                };
                let calls: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolUse { id, name, input } => Some(
                            json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}),
                        ),
                        _ => None,
                    })
                    .collect();
                let mut msg = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.max_tokens {
        let key = match max_field {
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::MaxTokens => "max_tokens",
        };
        out.insert(key.into(), n.into());
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        out.insert("stop".into(), req.stop.clone().into());
    }
    // No `reasoning_effort` for a translated request: OpenAI's and compatible servers' models
    // without reasoning refuse the field, and an OpenAI-wire endpoint does not say which it
    // serves; `Wire::losses` names the thinking dropped instead.
    match &req.format {
        None => {}
        Some(c::OutputFormat::JsonObject) => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(c::OutputFormat::JsonSchema { name, schema, strict }) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
            );
        }
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), u.clone().into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.schema});
                if let Some(d) = &t.description {
                    f["description"] = d.clone().into();
                }
                if t.strict {
                    f["strict"] = true.into();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), tools.into());
        if req.no_parallel_tools {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    if let Some(choice) = &req.tool_choice {
        let v = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Any => json!("required"),
            ToolChoice::None => json!("none"),
            ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
        };
        out.insert("tool_choice".into(), v);
    }
    if req.stream {
        out.insert("stream".into(), true.into());
        // Always ask for usage: the client's protocol may report it even if it did not ask.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    out
}

pub(super) fn image_url(img: &Image) -> String {
    match img {
        Image::Url(u) => u.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

pub fn stop_from(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        other => StopReason::Other(other.to_owned()),
    }
}

pub fn stop_to(reason: &StopReason) -> &str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ContextWindow => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
        StopReason::Other(s) => s,
    }
}

fn usage_from(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object).map(Usage::reported).unwrap_or_default()
}

/// OpenAI's usage: `prompt_tokens` counts cached tokens too (and names them in its details),
/// `completion_tokens` counts reasoning too.
fn usage_to(u: &Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens(), "completion_tokens": u.output_tokens,
           "total_tokens": u.prompt_tokens() + u.output_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
           "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}})
}

/// A provider's `chat.completion` → canonical. `None` if it is not one.
pub fn decode_response(body: &[u8]) -> Option<c::Response> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choice = v.get("choices")?.get(0)?;
    let msg = choice.get("message")?;
    let mut content = Vec::new();
    let text = content_text(msg.get("content").unwrap_or(&Value::Null));
    if !text.is_empty() {
        content.push(Part::Text(text));
    }
    for call in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(Part::ToolUse {
            id: call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            name: call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            input: serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_owned())),
        });
    }
    Some(c::Response {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        content,
        stop: stop_from(choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop")),
        usage: usage_from(v.get("usage")),
    })
}

/// Canonical → the client's `chat.completion`.
pub fn encode_response(r: &c::Response) -> Value {
    let text = c::text_of(&r.content);
    let calls: Vec<Value> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolUse { id, name, input } => {
                Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}))
            }
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    json!({"id": super::reply_id("chatcmpl-", &r.id), "object": "chat.completion", "created": unix_now(), "model": r.model,
           "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": stop_to(&r.stop)}],
           "usage": usage_to(&r.usage)})
}

/// The OpenAI error envelope.
pub fn error_body(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The OpenAI `type` for a status, for errors translated from another protocol.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 | 403 | 400 | 404 | 413 | 422 => "invalid_request_error",
        429 => "rate_limit_error",
        503 | 529 => "service_unavailable_error",
        504 => "timeout_error",
        _ => "server_error",
    }
}

/// OpenAI chunks → canonical events.
#[derive(Default)]
pub struct Decoder {
    started: bool,
}

impl SseEventDecoder for Decoder {
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let Some(payload) = sse::data(event) else { return };
        if payload.trim() == "[DONE]" {
            out.push(Event::End);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&payload) else { return };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let kind = err.get("type").and_then(Value::as_str).unwrap_or_default();
            out.push(Event::Error {
                overloaded: matches!(kind, "tokens" | "requests" | "rate_limit_error" | "service_unavailable_error"),
                message: err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_owned(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
            });
        }
        if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
            let delta = choice.get("delta");
            if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push(Event::Text(t.to_owned()));
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    let id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                    out.push(Event::ToolStart { index, id, name: name.to_owned() });
                }
                if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    out.push(Event::ToolArgs { index, fragment: a.to_owned() });
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(Event::Stop(stop_from(r)));
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push(Event::Usage(usage_from(Some(u))));
        }
    }
}

/// Canonical events → OpenAI chunks.
pub struct Encoder {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    stop: Option<StopReason>,
    usage: Usage,
    /// The bytes every delta chunk starts with, up to the delta object (`data: {"id":…,"delta":`);
    /// rebuilt when the id or model change. Text and argument deltas — nearly every event of
    /// a stream — are written around it without building a JSON tree.
    prefix: Vec<u8>,
}

/// What follows a delta object in a chunk that does not finish the stream.
const DELTA_SUFFIX: &[u8] = br#","logprobs":null,"finish_reason":null}]"#;

impl Encoder {
    pub fn new(include_usage: bool) -> Self {
        let mut e = Encoder {
            include_usage,
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            stop: None,
            usage: Usage::default(),
            prefix: Vec::new(),
        };
        e.rebuild_prefix();
        e
    }

    fn rebuild_prefix(&mut self) {
        let head =
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model});
        let head = head.to_string();
        let mut p = b"data: ".to_vec();
        // `{"id":…,"model":"m"}` → `{"id":…,"model":"m","choices":[{"index":0,"delta":`
        p.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        p.extend_from_slice(br#","choices":[{"index":0,"delta":"#);
        self.prefix = p;
    }

    /// A delta chunk whose one variable part is a string, written straight into `out`.
    fn text_delta(&self, open: &[u8], text: &str, close: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(open);
        let _ = serde_json::to_writer(bytes::BufMut::writer(&mut *out), text);
        out.extend_from_slice(close);
        out.extend_from_slice(DELTA_SUFFIX);
        if self.include_usage {
            out.extend_from_slice(br#","usage":null"#);
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        write_data(&c, out);
    }
}

fn write_data(v: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: &Event, out: &mut BytesMut) {
        match event {
            Event::Start { id, model } => {
                self.id = super::reply_id("chatcmpl-", id);
                self.model = model.clone();
                self.rebuild_prefix();
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            Event::Text(t) => self.text_delta(br#"{"content":"#, t, b"}", out),
            Event::ToolStart { index, id, name } => self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
                out,
            ),
            Event::ToolArgs { index, fragment } => {
                let open = format!(r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":"#);
                self.text_delta(open.as_bytes(), fragment, b"}}]}", out)
            }
            // Chat Completions has no place for reasoning; its tokens are counted in the usage.
            Event::Thinking(_) | Event::ThinkingSignature(_) => {}
            Event::Usage(u) => self.usage.merge(*u),
            Event::Stop(r) => self.stop = Some(r.clone()),
            Event::Error { overloaded, message } => {
                let kind = if *overloaded { "service_unavailable_error" } else { "server_error" };
                write_data(&error_body(kind, None, message, None), out);
            }
            Event::End => {
                let reason = self.stop.take().unwrap_or(StopReason::EndTurn);
                self.chunk(json!({}), Some(stop_to(&reason)), out);
                if self.include_usage {
                    let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage_to(&self.usage)});
                    write_data(&c, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }

    fn failure(&mut self, code: &str, message: &str, out: &mut BytesMut) {
        write_data(&error_body("server_error", Some(code), message, None), out);
    }
}

/// `Map::get` of a nested key, for optional objects.
trait PointerGet {
    fn pointer_get(&self, outer: &str, inner: &str) -> Option<&Value>;
}

impl PointerGet for Map<String, Value> {
    fn pointer_get(&self, outer: &str, inner: &str) -> Option<&Value> {
        self.get(outer).and_then(|o| o.get(inner))
    }
}
