//! OpenAI Responses API ↔ canonical.
//!
//! The Responses API is what agent frameworks speak (the OpenAI Agents SDK, Codex CLI): a
//! request is `instructions` plus a list of typed input items (messages, function calls and
//! their outputs, reasoning), a reply is a list of output items, and a stream is a sequence of
//! typed events (`response.created`, `response.output_text.delta`, …, `response.completed`)
//! numbered by `sequence_number`.
//!
//! Endpoints that speak it themselves (OpenAI, Azure OpenAI, compatible servers configured with
//! `api: responses`) get the caller's body untouched; every other endpoint gets it translated
//! through the canonical form, and what the canonical form cannot carry — built-in tools,
//! `previous_response_id`, stored prompts — makes such an endpoint ineligible rather than
//! silently changing the request (see `Unrepresented`).

mod stream;

pub use stream::{Decoder, Encoder};

use super::openai::{image_from_url, image_url, push};
use super::{openai, unix_now};
use crate::canonical::{self as c, Image, Message, NAMESPACE_SEPARATOR, Part, Role, StopReason, ToolChoice, Usage};
use crate::error::ApiError;
use serde_json::{Map, Value, json};

fn bad(param: &'static str, message: String) -> ApiError {
    ApiError::invalid_request("invalid_value", Some(param), message)
}

/// The request fields the canonical form carries; any other is reported when translated.
const CARRIED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "max_output_tokens",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "parallel_tool_calls",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "store",
    "include",
    "stream_options",
];

/// Fields that need state or features only the Responses API has change the answer; the rest
/// only tune it.
fn loss(field: &str, v: &Value) -> Option<c::Loss> {
    let asks = match field {
        "previous_response_id" | "conversation" | "prompt" => true,
        "background" => v.as_bool() == Some(true),
        "top_logprobs" => v.as_u64().is_some_and(|n| n > 0),
        _ => return Some(c::Loss::Tuning),
    };
    asks.then_some(c::Loss::Meaning)
}

/// A client's checked request body → canonical.
pub fn decode_request(body: &Map<String, Value>) -> Result<c::Request, ApiError> {
    let mut req = c::Request {
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        // A Responses stream always ends with the usage (`response.completed`).
        include_usage: true,
        unrepresented: c::unrepresented(body, CARRIED, loss),
        ..Default::default()
    };
    req.max_tokens = body.get("max_output_tokens").and_then(Value::as_u64);
    req.temperature = body.get("temperature").and_then(Value::as_f64);
    req.top_p = body.get("top_p").and_then(Value::as_f64);
    req.user = body.get("safety_identifier").or(body.get("user")).and_then(Value::as_str).map(str::to_owned);
    req.no_parallel_tools = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
    if let Some(text) = body.get("instructions").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        req.system.push(Part::Text(text.to_owned()));
    }
    reasoning(body, &mut req)?;
    text_format(body, &mut req)?;
    tools(body, &mut req)?;
    match body.get("input") {
        Some(Value::String(s)) => req.messages.push(Message { role: Role::User, content: vec![Part::Text(s.clone())] }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut req)?;
            }
        }
        _ => {}
    }
    Ok(req)
}

fn reasoning(body: &Map<String, Value>, req: &mut c::Request) -> Result<(), ApiError> {
    let Some(r) = body.get("reasoning").filter(|r| !r.is_null()) else { return Ok(()) };
    req.reasoning = openai::effort(r.get("effort"), "reasoning", "reasoning.effort")?;
    Ok(())
}

fn text_format(body: &Map<String, Value>, req: &mut c::Request) -> Result<(), ApiError> {
    let Some(text) = body.get("text").filter(|t| !t.is_null()) else { return Ok(()) };
    if text.get("verbosity").is_some_and(|v| !v.is_null()) {
        req.unrepresented.push(c::Unrepresented::tuning("text.verbosity"));
    }
    let Some(f) = text.get("format").filter(|f| !f.is_null()) else { return Ok(()) };
    match f.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => req.format = Some(c::OutputFormat::JsonObject),
        Some("json_schema") => req.format = Some(openai::json_schema(f, "text", "text.format")?),
        _ => req.unrepresented.push(c::Unrepresented::meaning("text.format")),
    }
    Ok(())
}

fn tools(body: &Map<String, Value>, req: &mut c::Request) -> Result<(), ApiError> {
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tools", format!("tools[{i}].name is required")))?;
                req.tools.push(function_tool(t, name));
            }
            // A group of function tools: flattened, each named `{namespace}__{tool}`.
            Some("namespace") => {
                let ns = t.get("name").and_then(Value::as_str).unwrap_or_default();
                for inner in t.get("tools").and_then(Value::as_array).into_iter().flatten() {
                    match inner.get("type").and_then(Value::as_str) {
                        Some("function") => {
                            let name = inner.get("name").and_then(Value::as_str).unwrap_or_default();
                            req.tools.push(function_tool(inner, &format!("{ns}{NAMESPACE_SEPARATOR}{name}")));
                        }
                        other => req.unrepresented.push(c::Unrepresented::meaning(&format!(
                            "{} tool in namespace {ns}",
                            other.unwrap_or("untyped")
                        ))),
                    }
                }
                req.namespaces.push(ns.to_owned());
            }
            // Built-in tools (web search, file search, code interpreter, MCP, …) run inside
            // OpenAI: only an endpoint that speaks the Responses API can honour them.
            Some(other) => req.unrepresented.push(c::Unrepresented::meaning(&format!("{other} tool"))),
            None => return Err(bad("tools", format!("tools[{i}] has no `type`"))),
        }
    }
    req.tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any,
            _ => ToolChoice::Auto,
        }),
        Some(v) => match (v.get("type").and_then(Value::as_str), v.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(n)) => Some(ToolChoice::Tool(n.to_owned())),
            (Some("function"), None) => {
                return Err(bad("tool_choice", "tool_choice of type function needs a name".into()));
            }
            _ => {
                req.unrepresented.push(c::Unrepresented::meaning("tool_choice"));
                None
            }
        },
    };
    Ok(())
}

fn function_tool(t: &Value, name: &str) -> c::Tool {
    c::Tool {
        name: name.to_owned(),
        description: t.get("description").and_then(Value::as_str).map(str::to_owned),
        schema: t
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        // The Responses API makes function tools strict unless told otherwise.
        strict: t.get("strict").and_then(Value::as_bool).unwrap_or(true),
        cache: None,
    }
}

/// A function call's flat name: `{namespace}__{name}` when it names its namespace.
fn flat_name(item: &Value) -> String {
    let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
    match item.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    }
}

/// A flat tool name split back into the caller's namespace and name, when it is one of theirs.
fn split_name<'a>(flat: &'a str, namespaces: &[String]) -> (Option<&'a str>, &'a str) {
    for ns in namespaces {
        if let Some(rest) = flat.strip_prefix(ns.as_str()).and_then(|r| r.strip_prefix(NAMESPACE_SEPARATOR)) {
            return (Some(&flat[..ns.len()]), rest);
        }
    }
    (None, flat)
}

/// A `function_call` output item.
fn call_item(id: &str, call_id: &str, flat: &str, arguments: &str, status: &str, namespaces: &[String]) -> Value {
    let (ns, name) = split_name(flat, namespaces);
    let mut item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status});
    if let Some(ns) = ns {
        item["namespace"] = ns.into();
    }
    item
}

/// The marker that tells a reasoning item carrying Anthropic's `redacted_thinking` from one
/// carrying a signature, when a translated reply's reasoning is handed back.
const REDACTED: &str = "redacted:";

fn input_item(item: &Value, i: usize, req: &mut c::Request) -> Result<(), ApiError> {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
            let content = item.get("content").unwrap_or(&Value::Null);
            let parts = content_parts(content, i)?;
            match role {
                // Instructions mid-conversation join the system prompt: the other protocols
                // have one place for them.
                "system" | "developer" => req.system.extend(parts.into_iter().filter(|p| matches!(p, Part::Text(_)))),
                "user" => push(&mut req.messages, Role::User, parts),
                "assistant" => push(&mut req.messages, Role::Assistant, parts),
                other => {
                    return Err(bad(
                        "input",
                        format!("input[{i}].role `{other}` is not user, assistant, system or developer"),
                    ));
                }
            }
        }
        Some("function_call") => {
            let args = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let input: Value = if args.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(args)
                    .map_err(|e| bad("input", format!("input[{i}].arguments is not valid JSON: {e}")))?
            };
            let call = Part::ToolUse {
                id: item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: flat_name(item),
                input,
            };
            push(&mut req.messages, Role::Assistant, vec![call]);
        }
        Some("function_call_output") => {
            let output = item.get("output").unwrap_or(&Value::Null);
            let content = match output {
                Value::String(s) => vec![Part::Text(s.clone())],
                other => content_parts(other, i)?,
            };
            let result = Part::ToolResult {
                tool_use_id: item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                content,
                is_error: false,
            };
            push(&mut req.messages, Role::User, vec![result]);
        }
        Some("reasoning") => {
            let text: String = item
                .get("summary")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n\n");
            let sealed = item.get("encrypted_content").and_then(Value::as_str).filter(|s| !s.is_empty());
            let part = match sealed {
                Some(s) if s.starts_with(REDACTED) => Part::RedactedThinking(s[REDACTED.len()..].to_owned()),
                Some(s) => Part::Thinking { text, signature: Some(s.to_owned()) },
                // Reasoning without its seal cannot be handed to any provider that checks it.
                None if text.is_empty() => return Ok(()),
                None => Part::Thinking { text, signature: None },
            };
            push(&mut req.messages, Role::Assistant, vec![part]);
        }
        // References to stored items and the calls of built-in tools only mean something to
        // the Responses API itself.
        Some(other) => req.unrepresented.push(c::Unrepresented::meaning(&format!("{other} input item"))),
    }
    Ok(())
}

fn content_parts(content: &Value, i: usize) -> Result<Vec<Part>, ApiError> {
    let list = match content {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(list) => list,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(bad("input", format!("input[{i}].content must be a string or an array"))),
    };
    let mut parts = Vec::with_capacity(list.len());
    for p in list {
        let text = || p.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => parts.push(Part::Text(text())),
            Some("refusal") => {
                parts.push(Part::Text(p.get("refusal").and_then(Value::as_str).unwrap_or_default().to_owned()))
            }
            Some("input_image") => match p.get("image_url").and_then(Value::as_str) {
                Some(url) => parts.push(Part::Image(image_from_url(url))),
                None => {
                    return Err(bad(
                        "input",
                        format!(
                            "input[{i}] names an uploaded image, which only OpenAI endpoints can read; send its `image_url` instead"
                        ),
                    ));
                }
            },
            Some("input_file") => {
                let data = p.get("file_data").and_then(Value::as_str).map(image_from_url);
                match data {
                    Some(Image::Base64 { media_type, data }) => parts.push(Part::Document {
                        media_type,
                        data,
                        name: p.get("filename").and_then(Value::as_str).map(str::to_owned),
                    }),
                    _ => {
                        return Err(bad(
                            "input",
                            format!(
                                "input[{i}] names a file by id or URL, which only OpenAI endpoints can read; send its `file_data` as a data: URL instead"
                            ),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(bad(
                    "input",
                    format!("input[{i}] has a `{other}` part, which this endpoint's protocol cannot carry"),
                ));
            }
            None => {}
        }
    }
    Ok(parts)
}

/// Canonical → a Responses request body for `model`.
pub fn encode_request(req: &c::Request, model: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let instructions = c::text_of(&req.system);
    if !instructions.is_empty() {
        out.insert("instructions".into(), instructions.into());
    }
    let mut input = Vec::new();
    for m in &req.messages {
        let mut content = Vec::new();
        let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
            if !content.is_empty() {
                let role = if m.role == Role::User { "user" } else { "assistant" };
                input.push(json!({"type": "message", "role": role, "content": std::mem::take(content)}));
            }
        };
        for p in &m.content {
            match p {
                Part::Text(t) if m.role == Role::User => content.push(json!({"type": "input_text", "text": t})),
                // The model's own words go back as an easy message: an output message item
                // would need the id and status only the provider that wrote it has.
                Part::Text(t) => {
                    flush(&mut content, &mut input);
                    input.push(json!({"type": "message", "role": "assistant", "content": t}));
                }
                Part::Image(img) => {
                    content.push(json!({"type": "input_image", "image_url": image_url(img), "detail": "auto"}))
                }
                Part::Document { media_type, data, name } => content.push(json!({"type": "input_file",
                    "file_data": format!("data:{media_type};base64,{data}"), "filename": name})),
                Part::ToolUse { id, name, input: args } => {
                    flush(&mut content, &mut input);
                    input.push(
                        json!({"type": "function_call", "call_id": id, "name": name, "arguments": args.to_string()}),
                    );
                }
                Part::ToolResult { tool_use_id, content: result, .. } => {
                    flush(&mut content, &mut input);
                    input.push(
                        json!({"type": "function_call_output", "call_id": tool_use_id, "output": c::text_of(result)}),
                    );
                }
                Part::Thinking { text, signature } => {
                    flush(&mut content, &mut input);
                    input.push(reasoning_item(&reply_item_id("rs_"), text, signature.as_deref()));
                }
                Part::RedactedThinking(data) => {
                    flush(&mut content, &mut input);
                    input.push(redacted_item(&reply_item_id("rs_"), data));
                }
                Part::CachePoint(_) => {}
            }
        }
        flush(&mut content, &mut input);
    }
    out.insert("input".into(), input.into());
    if let Some(n) = req.max_tokens {
        out.insert("max_output_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if let Some(u) = &req.user {
        out.insert("safety_identifier".into(), u.clone().into());
    }
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.schema, "strict": t.strict}))
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
            ToolChoice::Tool(n) => json!({"type": "function", "name": n}),
        };
        out.insert("tool_choice".into(), v);
    }
    if let Some(f) = &req.format {
        let format = match f {
            c::OutputFormat::JsonObject => json!({"type": "json_object"}),
            c::OutputFormat::JsonSchema { name, schema, strict } => {
                json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict})
            }
        };
        out.insert("text".into(), json!({"format": format}));
    }
    if let Some(r) = &req.reasoning {
        out.insert("reasoning".into(), json!({"effort": r.level().as_str()}));
    }
    // Nothing is kept at the provider: spillway may send the next turn elsewhere.
    out.insert("store".into(), false.into());
    out
}

fn reasoning_item(id: &str, text: &str, signature: Option<&str>) -> Value {
    let summary: Vec<Value> =
        if text.is_empty() { Vec::new() } else { vec![json!({"type": "summary_text", "text": text})] };
    let mut item = json!({"type": "reasoning", "id": id, "summary": summary});
    if let Some(s) = signature {
        item["encrypted_content"] = s.into();
    }
    item
}

fn redacted_item(id: &str, data: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "encrypted_content": format!("{REDACTED}{data}")})
}

/// A fresh item id (`msg_…`, `fc_…`, `rs_…`): translated replies have none of their own.
fn reply_item_id(prefix: &str) -> String {
    super::reply_id(prefix, "")
}

/// `status` and `incomplete_details` for a stop reason.
fn status_of(stop: &StopReason) -> (&'static str, Value) {
    match stop {
        StopReason::MaxTokens | StopReason::ContextWindow => ("incomplete", json!({"reason": "max_output_tokens"})),
        StopReason::Refusal => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Responses usage: `input_tokens` counts cached tokens too, `output_tokens` reasoning too.
fn usage_to(u: &Usage) -> Value {
    json!({"input_tokens": u.prompt_tokens(),
           "input_tokens_details": {"cached_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens},
           "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
           "total_tokens": u.prompt_tokens() + u.output_tokens})
}

/// The `response` object, around its output items.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({"id": id, "object": "response", "created_at": created, "status": status, "model": model,
           "error": null, "incomplete_details": incomplete, "instructions": null, "metadata": {},
           "output": output, "parallel_tool_calls": true, "temperature": null, "top_p": null,
           "tool_choice": "auto", "tools": [], "store": false, "text": {"format": {"type": "text"}},
           "truncation": "disabled", "usage": usage.map(usage_to)})
}

/// Canonical → the client's `response`; `namespaces`: the caller's tool namespaces.
pub fn encode_response(r: &c::Response, namespaces: &[String]) -> Value {
    let mut output = Vec::new();
    let mut texts: Vec<Value> = Vec::new();
    let flush = |texts: &mut Vec<Value>, output: &mut Vec<Value>| {
        if !texts.is_empty() {
            output.push(json!({"type": "message", "id": reply_item_id("msg_"), "status": "completed",
                "role": "assistant", "content": std::mem::take(texts)}));
        }
    };
    for p in &r.content {
        match p {
            Part::Text(t) => texts.push(json!({"type": "output_text", "text": t, "annotations": []})),
            Part::Thinking { text, signature } => {
                flush(&mut texts, &mut output);
                output.push(reasoning_item(&reply_item_id("rs_"), text, signature.as_deref()));
            }
            Part::RedactedThinking(data) => {
                flush(&mut texts, &mut output);
                output.push(redacted_item(&reply_item_id("rs_"), data));
            }
            Part::ToolUse { id, name, input } => {
                flush(&mut texts, &mut output);
                output.push(call_item(&format!("fc_{id}"), id, name, &input.to_string(), "completed", namespaces));
            }
            _ => {}
        }
    }
    flush(&mut texts, &mut output);
    let (status, incomplete) = status_of(&r.stop);
    response_object(&super::reply_id("resp_", &r.id), unix_now(), &r.model, status, incomplete, output, Some(&r.usage))
}

/// A provider's `response` → canonical. `None` if it is not one.
pub fn decode_response(body: &[u8]) -> Option<c::Response> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("object").and_then(Value::as_str) != Some("response") {
        return None;
    }
    let mut content = Vec::new();
    for item in v.get("output").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for p in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = p.get("text").or(p.get("refusal")).and_then(Value::as_str) {
                        content.push(Part::Text(t.to_owned()));
                    }
                }
            }
            Some("function_call") => {
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                content.push(Part::ToolUse {
                    id: item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    name: flat_name(item),
                    input: serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_owned())),
                });
            }
            _ => {}
        }
    }
    let calls = content.iter().any(|p| matches!(p, Part::ToolUse { .. }));
    Some(c::Response {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        content,
        stop: stop_from(&v, calls),
        usage: v.get("usage").and_then(Value::as_object).map(Usage::reported).unwrap_or_default(),
    })
}

fn stop_from(response: &Value, calls: bool) -> StopReason {
    match response.pointer("/incomplete_details/reason").and_then(Value::as_str) {
        Some("max_output_tokens") => StopReason::MaxTokens,
        Some("content_filter") => StopReason::Refusal,
        Some(other) => StopReason::Other(other.to_owned()),
        None if calls => StopReason::ToolUse,
        None => StopReason::EndTurn,
    }
}
