//! Anthropic Messages ↔ canonical.

use super::{SseEventDecoder, StreamEncoder};
use crate::canonical::{self as c, Event, Image, Message, Part, Role, StopReason, ToolChoice, Usage};
use crate::error::ApiError;
use crate::sse;
use bytes::BytesMut;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

/// Anthropic requires `max_tokens`; a request translated from a protocol where it is optional
/// gets this.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The smallest thinking budget the Messages API takes.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// The `anthropic_version` Claude on Vertex wants in the body.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

fn bad(param: &'static str, message: String) -> ApiError {
    ApiError::invalid_request("invalid_value", Some(param), message)
}

/// The request fields the canonical form carries; any other is reported when translated.
const CARRIED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "output_config",
    "thinking",
];

/// What losing a field the canonical form does not carry costs: a container or MCP servers
/// change what the model can do; the rest only tune the answer.
fn loss(field: &str, _: &Value) -> Option<c::Loss> {
    match field {
        "container" | "mcp_servers" => Some(c::Loss::Meaning),
        _ => Some(c::Loss::Tuning),
    }
}

/// A client's checked request body → canonical.
pub fn decode_request(body: &Map<String, Value>) -> Result<c::Request, ApiError> {
    let mut req = c::Request {
        unrepresented: c::unrepresented(body, CARRIED, loss),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        max_tokens: body.get("max_tokens").and_then(Value::as_u64),
        temperature: body.get("temperature").and_then(Value::as_f64),
        top_p: body.get("top_p").and_then(Value::as_f64),
        top_k: body.get("top_k").and_then(Value::as_u64),
        user: body.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str).map(str::to_owned),
        ..Default::default()
    };
    // An Anthropic client always gets usage in its stream.
    req.include_usage = true;
    if let Some(oc) = body.get("output_config").filter(|v| v.is_object()) {
        if let Some(f) = oc.get("format").filter(|f| !f.is_null()) {
            match (f.get("type").and_then(Value::as_str), f.get("schema").filter(|s| s.is_object())) {
                (Some("json_schema"), Some(schema)) => {
                    req.format = Some(c::OutputFormat::JsonSchema {
                        name: "output".into(),
                        schema: schema.clone(),
                        strict: true,
                    })
                }
                _ => {
                    return Err(bad(
                        "output_config",
                        "output_config.format needs type `json_schema` and a `schema` object".into(),
                    ));
                }
            }
        }
        if let Some(e) = oc.get("effort").and_then(Value::as_str) {
            let effort = c::Effort::parse(e)
                .ok_or_else(|| bad("output_config", format!("output_config.effort `{e}` is not a known level")))?;
            req.reasoning = Some(c::Reasoning { effort: Some(effort), ..req.reasoning.unwrap_or_default() });
        }
    }
    match body.get("thinking").and_then(|t| t.get("type")).and_then(Value::as_str) {
        None | Some("disabled") => {}
        Some(_) => {
            let budget = body.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64);
            req.reasoning = Some(c::Reasoning { budget_tokens: budget, ..req.reasoning.unwrap_or_default() });
        }
    }
    req.stop = body
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    match body.get("system") {
        Some(Value::String(s)) if !s.is_empty() => req.system.push(Part::Text(s.clone())),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    req.system.push(Part::Text(t.to_owned()));
                    req.system.extend(cache_point(b));
                }
            }
        }
        _ => {}
    }
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("tools", format!("tools[{i}].name is required")))?;
        let Some(schema) = t.get("input_schema") else {
            return Err(bad(
                "tools",
                format!("tools[{i}] (`{name}`) is a server tool, which only Anthropic endpoints run"),
            ));
        };
        req.tools.push(c::Tool {
            name: name.to_owned(),
            description: t.get("description").and_then(Value::as_str).map(str::to_owned),
            schema: schema.clone(),
            strict: t.get("strict").and_then(Value::as_bool).unwrap_or(false),
            cache: cache_of(t),
        });
    }
    if let Some(tc) = body.get("tool_choice") {
        req.no_parallel_tools = tc.get("disable_parallel_tool_use").and_then(Value::as_bool).unwrap_or(false);
        req.tool_choice = Some(match tc.get("type").and_then(Value::as_str).unwrap_or("auto") {
            "any" => ToolChoice::Any,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(tc.get("name").and_then(Value::as_str).unwrap_or_default().to_owned()),
            _ => ToolChoice::Auto,
        });
    }
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("assistant") => Role::Assistant,
            // A system message mid-conversation joins the system instructions: the other
            // providers take them in one place.
            Some("system") => {
                let parts = blocks(m.get("content").unwrap_or(&Value::Null), &format!("messages[{i}]"))?;
                req.system.extend(parts.into_iter().filter(|p| matches!(p, Part::Text(_) | Part::CachePoint(_))));
                continue;
            }
            _ => Role::User,
        };
        let content = blocks(m.get("content").unwrap_or(&Value::Null), &format!("messages[{i}]"))?;
        req.messages.push(Message { role, content });
    }
    Ok(req)
}

/// A block's `cache_control`, as the canonical breakpoint.
fn cache_of(block: &Value) -> Option<c::Cache> {
    let cc = block.get("cache_control").filter(|v| v.is_object())?;
    Some(c::Cache { ttl: cc.get("ttl").and_then(Value::as_str).map(str::to_owned) })
}

/// The breakpoint that follows a block with `cache_control`, if it has one.
fn cache_point(block: &Value) -> Option<Part> {
    cache_of(block).map(Part::CachePoint)
}

/// `cache_control` for a breakpoint.
fn cache_control(cache: &c::Cache) -> Value {
    match &cache.ttl {
        Some(ttl) => json!({"type": "ephemeral", "ttl": ttl}),
        None => json!({"type": "ephemeral"}),
    }
}

/// Parts as Anthropic blocks: a breakpoint becomes the `cache_control` of the block before it.
fn blocks_json(parts: &[Part]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Part::CachePoint(cache) => {
                if let Some(last) = out.last_mut() {
                    last["cache_control"] = cache_control(cache);
                }
            }
            // Unsigned reasoning (Gemini's, say) would be refused: it is not the model's own.
            p if !p.can_be_handed_back() => {}
            p => out.push(part_json(p)),
        }
    }
    out
}

fn blocks(content: &Value, at: &str) -> Result<Vec<Part>, ApiError> {
    let list = match content {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(list) => list,
        _ => return Ok(Vec::new()),
    };
    let mut parts = Vec::new();
    for (j, b) in list.iter().enumerate() {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let cached = cache_point(b);
        match kind {
            "text" => parts.push(Part::Text(s("text"))),
            "image" => {
                let src = b.get("source").unwrap_or(&Value::Null);
                let img = match src.get("type").and_then(Value::as_str) {
                    Some("url") => Image::Url(src.get("url").and_then(Value::as_str).unwrap_or_default().to_owned()),
                    _ => Image::Base64 {
                        media_type: src.get("media_type").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        data: src.get("data").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    },
                };
                parts.push(Part::Image(img));
            }
            "document" if b.pointer("/source/type").and_then(Value::as_str) == Some("base64") => {
                parts.push(Part::Document {
                    media_type: b.pointer("/source/media_type").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    data: b.pointer("/source/data").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    name: b.get("title").and_then(Value::as_str).map(str::to_owned),
                });
            }
            "tool_use" => parts.push(Part::ToolUse {
                id: s("id"),
                name: s("name"),
                input: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            "tool_result" => parts.push(Part::ToolResult {
                tool_use_id: s("tool_use_id"),
                content: blocks(b.get("content").unwrap_or(&Value::Null), &format!("{at}.content[{j}]"))?,
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }),
            // Reasoning from an earlier turn, kept to be handed back with its signature.
            "thinking" => parts.push(Part::Thinking {
                text: s("thinking"),
                signature: b.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
            }),
            "redacted_thinking" => parts.push(Part::RedactedThinking(s("data"))),
            other => {
                return Err(bad(
                    "messages",
                    format!("{at}.content[{j}] is a `{other}` block, which this endpoint's protocol cannot carry"),
                ));
            }
        }
        parts.extend(cached);
    }
    Ok(parts)
}

fn part_json(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Thinking { text, signature } => json!({"type": "thinking", "thinking": text, "signature": signature}),
        Part::RedactedThinking(data) => json!({"type": "redacted_thinking", "data": data}),
        Part::Image(Image::Url(u)) => json!({"type": "image", "source": {"type": "url", "url": u}}),
        Part::Document { media_type, data, name } => {
            let mut d =
                json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}});
            if let Some(n) = name {
                d["title"] = n.clone().into();
            }
            d
        }
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        Part::ToolUse { id, name, input } => {
            let input = if input.is_object() { input.clone() } else { json!({"value": input}) };
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Part::ToolResult { tool_use_id, content, is_error } => {
            json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": blocks_json(content), "is_error": is_error})
        }
        // Only reached outside `blocks_json`, which folds breakpoints into the block before.
        Part::CachePoint(_) => Value::Null,
    }
}

/// Canonical → an Anthropic request body for `model` (`None` for Vertex and Bedrock, which
/// take the model from the URL).
pub fn encode_request(req: &c::Request, model: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(m) = model {
        out.insert("model".into(), m.into());
    }
    out.insert("max_tokens".into(), req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into());
    match req.system.as_slice() {
        [] => {}
        [Part::Text(t)] => {
            out.insert("system".into(), t.clone().into());
        }
        parts => {
            out.insert("system".into(), blocks_json(parts).into());
        }
    }
    // Anthropic wants strictly alternating turns that start with the user.
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::User { "user" } else { "assistant" };
        super::push_turn(&mut messages, role, "content", blocks_json(&m.content));
    }
    out.insert("messages".into(), messages.into());
    // No sampling parameters: the Messages API (as the anthropic SDK's request types define it)
    // has none; `Wire::losses` reports them.
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), req.stop.clone().into());
    }
    if let Some(u) = &req.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.schema});
                if let Some(d) = &t.description {
                    v["description"] = d.clone().into();
                }
                if t.strict {
                    v["strict"] = true.into();
                }
                if let Some(cache) = &t.cache {
                    v["cache_control"] = cache_control(cache);
                }
                v
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    let choice = match (&req.tool_choice, req.no_parallel_tools) {
        (None, false) => None,
        (None | Some(ToolChoice::Auto), _) => Some(json!({"type": "auto"})),
        (Some(ToolChoice::Any), _) => Some(json!({"type": "any"})),
        (Some(ToolChoice::None), _) => Some(json!({"type": "none"})),
        (Some(ToolChoice::Tool(n)), _) => Some(json!({"type": "tool", "name": n})),
    };
    if let Some(mut ch) = choice.filter(|_| !req.tools.is_empty()) {
        if req.no_parallel_tools && ch["type"] != "none" {
            ch["disable_parallel_tool_use"] = true.into();
        }
        out.insert("tool_choice".into(), ch);
    }
    let mut output_config = Map::new();
    if let Some(f) = &req.format {
        output_config.insert("format".into(), json!({"type": "json_schema", "schema": f.schema()}));
    }
    if let Some(r) = &req.reasoning {
        // A budget must be at least 1,024 and below `max_tokens` (`Wire::losses` reports the
        // thinking dropped when there is no room); without one the model decides.
        let max = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        match r.budget_tokens {
            Some(b) if max > MIN_THINKING_BUDGET => {
                let budget = b.clamp(MIN_THINKING_BUDGET, max - 1);
                out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
            }
            Some(_) => {}
            None => {
                out.insert("thinking".into(), json!({"type": "adaptive"}));
            }
        }
        if let Some(e) = r.effort {
            // Anthropic's levels start at `low`.
            output_config.insert("effort".into(), e.max(c::Effort::Low).as_str().into());
        }
    }
    if !output_config.is_empty() {
        out.insert("output_config".into(), output_config.into());
    }
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    out
}

pub fn stop_from(reason: &str) -> StopReason {
    match reason {
        "end_turn" | "pause_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::Refusal,
        "model_context_window_exceeded" => StopReason::ContextWindow,
        other => StopReason::Other(other.to_owned()),
    }
}

pub fn stop_to(reason: &StopReason) -> &str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::Refusal => "refusal",
        StopReason::ContextWindow => "model_context_window_exceeded",
        StopReason::Other(s) => s,
    }
}

/// Anthropic's usage, the canonical sense of each count.
fn usage_json(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
           "cache_creation_input_tokens": u.cache_write_tokens, "cache_read_input_tokens": u.cache_read_tokens})
}

fn usage_from(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object).map(Usage::reported).unwrap_or_default()
}

/// A provider's `message` → canonical. `None` if it is not one.
pub fn decode_response(body: &[u8]) -> Option<c::Response> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let content = blocks(v.get("content")?, "content").ok()?;
    Some(c::Response {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        content,
        stop: stop_from(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn")),
        usage: usage_from(v.get("usage")),
    })
}

fn message_id(id: &str) -> String {
    super::reply_id("msg_", id)
}

/// Canonical → the client's `message`.
pub fn encode_response(r: &c::Response) -> Value {
    // A reply shows all its reasoning; unsigned reasoning gets an empty signature, which a later
    // turn's decode reads as none.
    let content: Vec<Value> = r
        .content
        .iter()
        .map(|p| match p {
            Part::Thinking { text, signature: None } => json!({"type": "thinking", "thinking": text, "signature": ""}),
            p => part_json(p),
        })
        .filter(|v| !v.is_null())
        .collect();
    json!({"id": message_id(&r.id), "type": "message", "role": "assistant", "model": r.model, "content": content,
           "stop_reason": stop_to(&r.stop), "stop_sequence": null,
           "usage": usage_json(&r.usage)})
}

/// The Anthropic `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The Anthropic error envelope.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Anthropic events → canonical events.
#[derive(Default)]
pub struct Decoder {
    /// Tool calls seen so far, and the content-block index of the current one.
    tools: usize,
    tool_block: Option<u64>,
}

#[derive(serde::Deserialize)]
struct TextDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    delta: DeltaBody<'a>,
}

#[derive(serde::Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

impl SseEventDecoder for Decoder {
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let Some(payload) = sse::data(event) else { return };
        // Deltas are nearly every event: read them without building a JSON tree.
        if let Ok(d) = serde_json::from_str::<TextDelta<'_>>(&payload)
            && d.kind == "content_block_delta"
        {
            match (d.delta.kind.as_ref(), d.delta.text, d.delta.partial_json) {
                ("text_delta", Some(t), _) => return out.push(Event::Text(t.into_owned())),
                ("input_json_delta", _, Some(f)) if self.tool_block.is_some() && !f.is_empty() => {
                    return out.push(Event::ToolArgs { index: self.tools - 1, fragment: f.into_owned() });
                }
                // Reasoning deltas take the general path below: the fast one stays as small as
                // the text deltas it is for.
                ("thinking_delta" | "signature_delta", _, _) => {}
                _ => return,
            }
        }
        let Ok(v) = serde_json::from_str::<Value>(&payload) else { return };
        self.decode_json(&v, out);
    }
}

impl Decoder {
    /// One Anthropic stream event, however it was framed (SSE, or a Bedrock `chunk`).
    pub fn decode_json(&mut self, v: &Value, out: &mut Vec<Event>) {
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let m = v.get("message");
                let s = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
                out.push(Event::Start { id: s("id"), model: s("model") });
                out.push(Event::Usage(usage_from(m.and_then(|m| m.get("usage")))));
            }
            "content_block_start" => {
                let b = v.get("content_block");
                match b.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let s =
                            |k: &str| b.and_then(|b| b.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
                        out.push(Event::ToolStart { index: self.tools, id: s("id"), name: s("name") });
                        self.tool_block = v.get("index").and_then(Value::as_u64);
                        self.tools += 1;
                    }
                    Some("text") => {
                        if let Some(t) = b.and_then(|b| b.get("text")).and_then(Value::as_str).filter(|t| !t.is_empty())
                        {
                            out.push(Event::Text(t.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.and_then(|d| d.get("text")).and_then(Value::as_str).unwrap_or_default();
                        out.push(Event::Text(t.to_owned()));
                    }
                    Some("input_json_delta") if self.tool_block.is_some() => {
                        let f = d.and_then(|d| d.get("partial_json")).and_then(Value::as_str).unwrap_or_default();
                        if !f.is_empty() {
                            out.push(Event::ToolArgs { index: self.tools - 1, fragment: f.to_owned() });
                        }
                    }
                    Some("thinking_delta") => {
                        let t = d.and_then(|d| d.get("thinking")).and_then(Value::as_str).unwrap_or_default();
                        out.push(Event::Thinking(t.to_owned()));
                    }
                    Some("signature_delta") => {
                        let sig = d.and_then(|d| d.get("signature")).and_then(Value::as_str).unwrap_or_default();
                        out.push(Event::ThinkingSignature(sig.to_owned()));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(Event::Stop(stop_from(r)));
                }
                out.push(Event::Usage(usage_from(v.get("usage"))));
            }
            "message_stop" => out.push(Event::End),
            "error" => {
                let kind = v.pointer("/error/type").and_then(Value::as_str).unwrap_or_default();
                out.push(Event::Error {
                    overloaded: matches!(kind, "overloaded_error" | "rate_limit_error"),
                    message: v.pointer("/error/message").and_then(Value::as_str).unwrap_or("upstream error").to_owned(),
                });
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool,
    Thinking,
}

/// Canonical events → Anthropic events.
#[derive(Default)]
pub struct Encoder {
    /// The open content block and its index; `next` is the index the next block gets.
    open: Option<Block>,
    next: u64,
    stop: Option<StopReason>,
    usage: Usage,
}

/// Anthropic's `error` event for a provider's failure.
pub(crate) fn write_error(overloaded: bool, message: &str, out: &mut BytesMut) {
    let kind = if overloaded { "overloaded_error" } else { "api_error" };
    write_event("error", &error_body(kind, message), out);
}

fn write_event(name: &str, data: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl Encoder {
    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            write_event("content_block_stop", &json!({"type": "content_block_stop", "index": self.next - 1}), out);
        }
    }

    fn open(&mut self, block: Block, start: Value, out: &mut BytesMut) {
        self.close(out);
        write_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next, "content_block": start}),
            out,
        );
        self.open = Some(block);
        self.next += 1;
    }

    fn delta(&self, delta: Value, out: &mut BytesMut) {
        write_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
            out,
        );
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: &Event, out: &mut BytesMut) {
        match event {
            Event::Start { id, model } => {
                let msg = json!({"id": message_id(id), "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": usage_json(&Usage { output_tokens: 0, ..self.usage })});
                write_event("message_start", &json!({"type": "message_start", "message": msg}), out);
            }
            Event::Text(t) => {
                if self.open != Some(Block::Text) {
                    self.open(Block::Text, json!({"type": "text", "text": ""}), out);
                }
                self.delta(json!({"type": "text_delta", "text": t}), out);
            }
            Event::ToolStart { id, name, .. } => {
                self.open(Block::Tool, json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
            }
            Event::Thinking(t) => {
                if self.open != Some(Block::Thinking) {
                    self.open(Block::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
                }
                self.delta(json!({"type": "thinking_delta", "thinking": t}), out);
            }
            Event::ThinkingSignature(sig) => {
                if self.open != Some(Block::Thinking) {
                    self.open(Block::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
                }
                self.delta(json!({"type": "signature_delta", "signature": sig}), out);
            }
            Event::ToolArgs { fragment, .. } => {
                if self.open == Some(Block::Tool) {
                    self.delta(json!({"type": "input_json_delta", "partial_json": fragment}), out);
                }
            }
            Event::Usage(u) => self.usage.merge(*u),
            Event::Stop(r) => self.stop = Some(r.clone()),
            Event::Error { overloaded, message } => write_error(*overloaded, message, out),
            Event::End => {
                self.close(out);
                let reason = self.stop.take().unwrap_or(StopReason::EndTurn);
                let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_to(&reason), "stop_sequence": null},
                    "usage": usage_json(&self.usage)});
                write_event("message_delta", &delta, out);
                write_event("message_stop", &json!({"type": "message_stop"}), out);
            }
        }
    }

    fn failure(&mut self, _code: &str, message: &str, out: &mut BytesMut) {
        write_event("error", &error_body("api_error", message), out);
    }
}
