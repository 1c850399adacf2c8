//! Vertex AI Gemini (`generateContent`, `streamGenerateContent?alt=sse`) ↔ canonical.

use super::SseEventDecoder;
use crate::canonical::{self as c, Event, Image, Part, Role, StopReason, ToolChoice, Usage};
use crate::sse;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Canonical → a generateContent body (the model goes in the URL).
pub fn encode_request(req: &c::Request) -> Result<Map<String, Value>, String> {
    // Gemini answers a function call by the function's name, not a call id.
    let names: HashMap<&str, &str> = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            Part::ToolUse { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    let mut contents: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::User { "user" } else { "model" };
        let mut parts = Vec::new();
        for p in &m.content {
            parts.push(match p {
                // Vertex caches implicitly; an explicit breakpoint is reported dropped. Earlier
                // reasoning is not replayed: the signature Gemini needs rides on the call ids.
                Part::CachePoint(_) | Part::Thinking { .. } | Part::RedactedThinking(_) => continue,
                Part::Text(t) => json!({"text": t}),
                Part::Image(Image::Base64 { media_type, data }) => {
                    json!({"inlineData": {"mimeType": media_type, "data": data}})
                }
                Part::Image(Image::Url(u)) if u.starts_with("gs://") => {
                    json!({"fileData": {"mimeType": mime_from_path(u), "fileUri": u}})
                }
                Part::Image(Image::Url(_)) => return Err("Vertex Gemini takes images inline or from gs:// URIs".into()),
                Part::Document { media_type, data, .. } => {
                    json!({"inlineData": {"mimeType": media_type, "data": data}})
                }
                Part::ToolUse { id, name, input } => {
                    let mut part = json!({"functionCall": {"name": name, "args": input}});
                    if let Some(sig) = signature_of(id) {
                        part["thoughtSignature"] = sig.into();
                    }
                    part
                }
                Part::ToolResult { tool_use_id, content, .. } => {
                    let name = names.get(tool_use_id.as_str()).copied().unwrap_or(tool_use_id.as_str());
                    let text = c::text_of(content);
                    let response = match serde_json::from_str::<Value>(&text) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({"content": text}),
                    };
                    json!({"functionResponse": {"name": name, "response": response}})
                }
            });
        }
        super::push_turn(&mut contents, role, "parts", parts);
    }
    let mut out = Map::new();
    out.insert("contents".into(), contents.into());
    if !req.system.is_empty() {
        let parts: Vec<Value> = req
            .system
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(json!({"text": t})),
                _ => None,
            })
            .collect();
        out.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    let mut config = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.into(), v);
        }
    };
    put("maxOutputTokens", req.max_tokens.map(Value::from));
    put("temperature", req.temperature.map(Value::from));
    put("topP", req.top_p.map(Value::from));
    put("topK", req.top_k.map(Value::from));
    put("stopSequences", (!req.stop.is_empty()).then(|| req.stop.clone().into()));
    if let Some(r) = &req.reasoning {
        // A budget or a level, not both; thoughts are asked for, so their count is reported.
        let mut thinking = json!({"includeThoughts": true});
        match (r.budget_tokens, r.effort) {
            (Some(b), _) => thinking["thinkingBudget"] = b.into(),
            (None, Some(e)) => thinking["thinkingLevel"] = e.min(c::Effort::XHigh).as_str().to_ascii_uppercase().into(),
            (None, None) => {}
        }
        put("thinkingConfig", Some(thinking));
    }
    if let Some(f) = &req.format {
        put("responseMimeType", Some("application/json".into()));
        if let c::OutputFormat::JsonSchema { schema, .. } = f {
            put("responseJsonSchema", Some(schema.clone()));
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                // The full JSON Schema: `parameters` takes only Vertex's OpenAPI subset, and
                // refuses what strict and MCP tool schemas carry (`additionalProperties`, `$schema`).
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.schema});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let mode = match &req.tool_choice {
            Some(ToolChoice::Any) => json!({"mode": "ANY"}),
            Some(ToolChoice::None) => json!({"mode": "NONE"}),
            Some(ToolChoice::Tool(n)) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            Some(ToolChoice::Auto) | None => json!({"mode": "AUTO"}),
        };
        out.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
    }
    Ok(out)
}

fn mime_from_path(uri: &str) -> &'static str {
    match uri.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => "image/jpeg",
    }
}

fn stop_from(reason: &str, called_tool: bool) -> StopReason {
    match reason {
        // Gemini has no tool finish reason: a function-call answer finishes with STOP.
        "STOP" if called_tool => StopReason::ToolUse,
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => StopReason::Refusal,
        other => StopReason::Other(other.to_ascii_lowercase()),
    }
}

fn usage_from(v: Option<&Value>) -> Usage {
    let get = |k: &str| v.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    // `promptTokenCount` includes the cached tokens; `candidatesTokenCount` leaves out thinking.
    let cached = get("cachedContentTokenCount");
    let thoughts = get("thoughtsTokenCount");
    Usage {
        input_tokens: get("promptTokenCount").saturating_sub(cached),
        output_tokens: get("candidatesTokenCount") + thoughts,
        cache_read_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
    }
}

/// A generateContent reply → canonical.
pub fn decode_response(body: &[u8], model: &str) -> Option<c::Response> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("candidates").is_none() && v.get("promptFeedback").is_none() {
        return None;
    }
    let mut content = Vec::new();
    let mut calls = 0;
    for p in parts(&v) {
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                let signature = p.get("thoughtSignature").and_then(Value::as_str).map(str::to_owned);
                content.push(Part::Thinking { text: t.to_owned(), signature });
            } else {
                content.push(Part::Text(t.to_owned()));
            }
        } else if let Some(f) = p.get("functionCall") {
            content.push(Part::ToolUse {
                id: call_id(f, p, v.get("responseId").and_then(Value::as_str).unwrap_or_default(), calls),
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                input: f.get("args").cloned().unwrap_or(json!({})),
            });
            calls += 1;
        }
    }
    let reason = v.pointer("/candidates/0/finishReason").and_then(Value::as_str);
    let stop = match (reason, v.pointer("/promptFeedback/blockReason")) {
        (_, Some(_)) => StopReason::Refusal,
        (Some(r), None) => stop_from(r, calls > 0),
        (None, None) => StopReason::EndTurn,
    };
    Some(c::Response {
        id: v.get("responseId").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: v.get("modelVersion").and_then(Value::as_str).unwrap_or(model).to_owned(),
        content,
        stop,
        usage: usage_from(v.get("usageMetadata")),
    })
}

fn parts(v: &Value) -> impl Iterator<Item = &Value> {
    v.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten()
}

/// Marks the thought signature carried in a tool call's id.
const SIGNATURE: &str = "__sig_";

/// The id a Gemini function call gets: its own, else one made of the reply's id and the call's
/// place in it (ids must tell calls of different turns apart: tool results are matched to calls
/// by them). Gemini 3 wants a call's `thoughtSignature` back when the call is replayed in a
/// later turn, and neither client protocol has a place for it on a tool call, so it rides in
/// the id — its base64 in the URL-safe alphabet, which every client echoes back unchanged — and
/// `encode_request` takes it out again.
fn call_id(f: &Value, part: &Value, reply: &str, n: usize) -> String {
    let base = match f.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None if reply.is_empty() => format!("call_gemini_{n}"),
        None => format!("call_{reply}_{n}"),
    };
    let signature = part
        .get("thoughtSignature")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')));
    match signature {
        Some(sig) => {
            let url_safe: String = sig
                .trim_end_matches('=')
                .chars()
                .map(|ch| match ch {
                    '+' => '-',
                    '/' => '_',
                    ch => ch,
                })
                .collect();
            format!("{base}{SIGNATURE}{url_safe}")
        }
        None => base,
    }
}

/// The thought signature a tool call's id carries, as Gemini spelt it, if any.
fn signature_of(id: &str) -> Option<String> {
    let (_, sig) = id.rsplit_once(SIGNATURE)?;
    let mut out: String = sig
        .chars()
        .map(|ch| match ch {
            '-' => '+',
            '_' => '/',
            ch => ch,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    Some(out)
}

/// streamGenerateContent chunks → canonical events. Gemini sends no end marker: the chunk with
/// a finish reason (or a blocked prompt) is the last.
pub struct Decoder {
    model: String,
    started: bool,
    calls: usize,
}

impl Decoder {
    pub fn new(model: &str) -> Self {
        Decoder { model: model.to_owned(), started: false, calls: 0 }
    }
}

impl SseEventDecoder for Decoder {
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let Some(payload) = sse::data(event) else { return };
        let Ok(v) = serde_json::from_str::<Value>(&payload) else { return };
        if let Some(err) = v.get("error") {
            let status = err.get("status").and_then(Value::as_str).unwrap_or_default();
            out.push(Event::Error {
                overloaded: matches!(status, "RESOURCE_EXHAUSTED" | "UNAVAILABLE"),
                message: err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_owned(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            let model = v.get("modelVersion").and_then(Value::as_str).unwrap_or(&self.model).to_owned();
            out.push(Event::Start {
                id: v.get("responseId").and_then(Value::as_str).unwrap_or_default().to_owned(),
                model,
            });
        }
        for p in parts(&v) {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    if !t.is_empty() {
                        out.push(Event::Thinking(t.to_owned()));
                    }
                    if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                        out.push(Event::ThinkingSignature(sig.to_owned()));
                    }
                } else if !t.is_empty() {
                    out.push(Event::Text(t.to_owned()));
                }
            } else if let Some(f) = p.get("functionCall") {
                let index = self.calls;
                self.calls += 1;
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let reply = v.get("responseId").and_then(Value::as_str).unwrap_or_default();
                out.push(Event::ToolStart { index, id: call_id(f, p, reply, index), name });
                out.push(Event::ToolArgs { index, fragment: f.get("args").cloned().unwrap_or(json!({})).to_string() });
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            out.push(Event::Usage(usage_from(Some(u))));
        }
        let reason = v.pointer("/candidates/0/finishReason").and_then(Value::as_str);
        let blocked = v.pointer("/promptFeedback/blockReason").is_some();
        if reason.is_some() || blocked {
            let stop = if blocked { StopReason::Refusal } else { stop_from(reason.unwrap_or("STOP"), self.calls > 0) };
            out.push(Event::Stop(stop));
            out.push(Event::End);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Wire;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/fixtures/vertex/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn events(name: &str) -> Vec<Event> {
        let mut d = Wire::VertexGemini.stream_decoder("gemini-x", crate::protocol::DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for part in fixture(name).chunks(9) {
            d.feed(part, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn crlf_streams_decode_and_end_at_the_finish_reason() {
        let ev = events("stream_generate_content.sse");
        assert!(matches!(ev.last(), Some(Event::End)));
        assert!(ev.iter().any(|e| matches!(e, Event::Text(_))));
        assert!(ev.iter().any(|e| matches!(e, Event::Usage(u) if u.input_tokens > 0)));
        let ev = events("stream_generate_content_function_call.sse");
        assert!(ev.contains(&Event::Stop(StopReason::ToolUse)), "STOP after a function call means tool use: {ev:?}");
        let args = ev
            .iter()
            .find_map(|e| if let Event::ToolArgs { fragment, .. } = e { Some(fragment.clone()) } else { None })
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap()["location"], "Paris");
    }

    #[test]
    fn responses_decode() {
        let r = decode_response(&fixture("generate_content_response_function_call.json"), "m").unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        let r = decode_response(&fixture("generate_content_response.json"), "m").unwrap();
        assert!(matches!(&r.content[0], Part::Text(t) if !t.is_empty()));
        assert!(r.usage.output_tokens > 0);
    }

    #[test]
    fn requests_match_the_fixture_shape() {
        let text = include_str!("../../../tests/fixtures/anthropic/messages_request.json");
        let mut body: Map<String, Value> = serde_json::from_str(text).unwrap();
        body.retain(|k, _| !k.starts_with('_'));
        let c = crate::protocol::anthropic::decode_request(&body).unwrap();
        let v = Value::Object(encode_request(&c).unwrap());
        let fixture: Value = serde_json::from_slice(&fixture("generate_content_request.json")).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(fixture.get(key).is_some(), "{key} is not a generateContent field");
        }
        assert_eq!(v["contents"][1]["role"], "model");
        assert_eq!(v["contents"][1]["parts"][1]["functionCall"]["name"], "get_weather");
        let response = &v["contents"][2]["parts"][0]["functionResponse"];
        assert_eq!(response["name"], "get_weather", "results are matched to calls by name");
        assert_eq!(response["response"]["temperature_c"], 18);
        assert_eq!(v["contents"][0]["parts"][1]["inlineData"]["mimeType"], "image/png");
    }
}
