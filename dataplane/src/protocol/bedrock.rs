//! Bedrock Converse ↔ canonical, and the AWS event-stream replies of ConverseStream and
//! InvokeModelWithResponseStream (frames decoded, CRCs checked, by aws-smithy-eventstream).

use super::StreamDecoder;
use super::anthropic;
use crate::canonical::{self as c, Event, Image, Part, Role, StopReason, ToolChoice, Usage};
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use base64::Engine;
use bytes::BytesMut;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

/// The `anthropic_version` InvokeModel wants in Anthropic bodies.
pub const INVOKE_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Canonical → a Converse / ConverseStream body (the model goes in the URL). Fails on what
/// Converse cannot carry, so the attempt moves on instead of sending something else.
pub fn encode_converse(req: &c::Request) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    if !req.system.is_empty() {
        // Only text and cache points are ever system parts.
        out.insert("system".into(), req.system.iter().filter_map(|p| block(p).ok()).collect::<Vec<_>>().into());
    }
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::User { "user" } else { "assistant" };
        let content = m.content.iter().filter(|p| p.can_be_handed_back()).map(block).collect::<Result<Vec<_>, _>>()?;
        super::push_turn(&mut messages, role, "content", content);
    }
    out.insert("messages".into(), messages.into());
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), p.into());
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), req.stop.clone().into());
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), inference.into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .flat_map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.schema}});
                if let Some(d) = &t.description {
                    spec["description"] = d.clone().into();
                }
                if t.strict {
                    spec["strict"] = true.into();
                }
                let point = t.cache.as_ref().map(cache_point);
                std::iter::once(json!({"toolSpec": spec})).chain(point)
            })
            .collect();
        let mut config = json!({"tools": tools});
        // Converse has no "none": leaving toolChoice out means auto.
        match &req.tool_choice {
            Some(ToolChoice::Any) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Tool(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            Some(ToolChoice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            Some(ToolChoice::None) | None => {}
        }
        out.insert("toolConfig".into(), config);
    }
    if let Some(k) = req.top_k {
        out.insert("additionalModelRequestFields".into(), json!({"top_k": k}));
    }
    let mut output = Map::new();
    // Converse takes the schema as a JSON string.
    if let Some(f) = &req.format {
        let spec = json!({"schema": f.schema().to_string(), "name": f.name()});
        output.insert("textFormat".into(), json!({"type": "json_schema", "structure": {"jsonSchema": spec}}));
    }
    // Converse's own, model-independent reasoning control is a level.
    if let Some(r) = &req.reasoning {
        output.insert("effort".into(), r.level().max(c::Effort::Low).as_str().into());
    }
    if !output.is_empty() {
        out.insert("outputConfig".into(), output.into());
    }
    if let Some(u) = req.user.as_deref().filter(|u| metadata_value(u)) {
        out.insert("requestMetadata".into(), json!({"user": u}));
    }
    Ok(out)
}

/// Whether `v` fits a Converse `requestMetadata` value (botocore's model: at most 256 of
/// letters, digits, whitespace and `:_@$#=/+,-.`), where the end user's id is recorded for the
/// invocation logs.
pub fn metadata_value(v: &str) -> bool {
    v.len() <= 256 && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch.is_whitespace() || ":_@$#=/+,-.".contains(ch))
}

/// Converse's document format for a media type.
fn document_format(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A document name Converse accepts (letters, digits, single spaces, hyphens, parentheses and
/// square brackets, at most 200): the file name without its extension, other characters
/// replaced.
fn document_name(name: Option<&str>) -> String {
    let stem = name.map(|n| n.rsplit_once('.').map_or(n, |(s, _)| s)).unwrap_or("document");
    let mut out = String::new();
    for ch in stem.chars() {
        let ch = if ch.is_ascii_alphanumeric() || "-()[]".contains(ch) { ch } else { ' ' };
        if !(ch == ' ' && (out.is_empty() || out.ends_with(' '))) {
            out.push(ch);
        }
        if out.len() >= 200 {
            break;
        }
    }
    let out = out.trim_end().to_owned();
    if out.is_empty() { "document".to_owned() } else { out }
}

/// A `cachePoint` block: everything before it is cached.
fn cache_point(cache: &c::Cache) -> Value {
    match &cache.ttl {
        Some(ttl) => json!({"cachePoint": {"type": "default", "ttl": ttl}}),
        None => json!({"cachePoint": {"type": "default"}}),
    }
}

fn block(p: &Part) -> Result<Value, String> {
    Ok(match p {
        Part::CachePoint(cache) => cache_point(cache),
        // Only signed reasoning can be handed back; unsigned reasoning is left out above.
        Part::Thinking { text, signature } => {
            json!({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}})
        }
        Part::RedactedThinking(data) => json!({"reasoningContent": {"redactedContent": data}}),
        Part::Text(t) => json!({"text": t}),
        Part::Image(Image::Base64 { media_type, data }) => {
            let format = media_type.strip_prefix("image/").unwrap_or(media_type);
            json!({"image": {"format": format, "source": {"bytes": data}}})
        }
        Part::Image(Image::Url(_)) => return Err("Bedrock Converse takes images as bytes, not URLs".into()),
        Part::Document { media_type, data, name } => {
            let format = document_format(media_type)
                .ok_or_else(|| format!("Bedrock Converse takes no `{media_type}` documents"))?;
            json!({"document": {"format": format, "name": document_name(name.as_deref()), "source": {"bytes": data}}})
        }
        Part::ToolUse { id, name, input } => json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}),
        Part::ToolResult { tool_use_id, content, is_error } => {
            let content: Vec<Value> = content.iter().filter_map(|p| block(p).ok()).collect();
            let content = if content.is_empty() { vec![json!({"text": ""})] } else { content };
            json!({"toolResult": {"toolUseId": tool_use_id, "content": content,
                "status": if *is_error { "error" } else { "success" }}})
        }
    })
}

pub fn stop_from(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "guardrail_intervened" | "content_filtered" => StopReason::Refusal,
        "model_context_window_exceeded" => StopReason::ContextWindow,
        other => StopReason::Other(other.to_owned()),
    }
}

fn usage_from(v: Option<&Value>) -> Usage {
    let get = |k: &str| v.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: get("inputTokens"),
        output_tokens: get("outputTokens"),
        cache_read_tokens: get("cacheReadInputTokens"),
        cache_write_tokens: get("cacheWriteInputTokens"),
        reasoning_tokens: 0,
    }
}

/// A Converse reply → canonical. Converse replies carry no id; `model` names the endpoint's.
pub fn decode_response(body: &[u8], model: &str) -> Option<c::Response> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let blocks = v.pointer("/output/message/content")?.as_array()?;
    let mut content = Vec::new();
    for b in blocks {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            content.push(Part::Text(t.to_owned()));
        } else if let Some(r) = b.get("reasoningContent") {
            if let Some(t) = r.get("reasoningText") {
                content.push(Part::Thinking {
                    text: t.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    signature: t.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
                });
            } else if let Some(d) = r.get("redactedContent").and_then(Value::as_str) {
                content.push(Part::RedactedThinking(d.to_owned()));
            }
        } else if let Some(t) = b.get("toolUse") {
            let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            content.push(Part::ToolUse {
                id: s("toolUseId"),
                name: s("name"),
                input: t.get("input").cloned().unwrap_or(json!({})),
            });
        }
    }
    Some(c::Response {
        id: String::new(),
        model: model.to_owned(),
        content,
        stop: stop_from(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn")),
        usage: usage_from(v.get("usage")),
    })
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers().iter().find(|h| h.name().as_str() == name).and_then(|h| match h.value() {
        HeaderValue::String(s) => Some(s.as_str()),
        _ => None,
    })
}

/// Prelude (12 bytes) plus the message CRC (4): the shortest well-formed message.
const MIN_MESSAGE: usize = 16;

/// Event-stream framing shared by both Bedrock streams.
struct Frames {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// The longest message accepted. A frame's prelude announces its length; the decoder would
    /// buffer up to that (4 GiB) before it could check a CRC, so the announcement is checked
    /// first.
    max_frame: usize,
}

impl Frames {
    fn new(max_frame: usize) -> Self {
        Frames { decoder: MessageFrameDecoder::new(), buf: BytesMut::new(), max_frame }
    }

    fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(Message)) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        // The decoder is handed whole messages only, so the buffer always starts at a prelude
        // and its announced length can be checked before anything waits for it.
        while let Some(prelude) = self.buf.get(..4) {
            let announced = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
            if announced > self.max_frame {
                self.buf = BytesMut::new();
                return Err(format!(
                    "an event-stream message of {announced} bytes; at most {} are accepted",
                    self.max_frame
                ));
            }
            if announced < MIN_MESSAGE {
                return Err(format!("an event-stream message of {announced} bytes is shorter than its framing"));
            }
            if self.buf.len() < announced {
                return Ok(());
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(m)) => on(m),
                Ok(DecodedFrame::Incomplete) => return Ok(()),
                Err(e) => return Err(format!("corrupt event-stream frame: {e}")),
            }
        }
        Ok(())
    }
}

/// An exception or error frame (they end the stream) → a canonical error.
fn failure(m: &Message) -> Option<Event> {
    match header(m, ":message-type")? {
        "event" => None,
        "exception" => {
            let kind = header(m, ":exception-type").unwrap_or("exception");
            let body: Value = serde_json::from_slice(m.payload()).unwrap_or_default();
            let text = body.get("message").and_then(Value::as_str).unwrap_or(kind);
            Some(Event::Error {
                overloaded: matches!(kind, "throttlingException" | "serviceUnavailableException"),
                message: format!("{kind}: {text}"),
            })
        }
        _ => Some(Event::Error {
            overloaded: false,
            message: format!(
                "{}: {}",
                header(m, ":error-code").unwrap_or("error"),
                header(m, ":error-message").unwrap_or("event-stream error")
            ),
        }),
    }
}

#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    #[serde(borrow)]
    delta: DeltaBody<'a>,
}

#[derive(serde::Deserialize)]
struct DeltaBody<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(rename = "toolUse", borrow, default)]
    tool_use: Option<ToolInputDelta<'a>>,
}

/// A reasoning delta (text or the signature that ends it), read apart from the text deltas so
/// that their fast path stays as small as they are.
fn reasoning_delta(payload: &[u8], out: &mut Vec<Event>) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else { return };
    let Some(r) = v.pointer("/delta/reasoningContent") else { return };
    if let Some(t) = r.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        out.push(Event::Thinking(t.to_owned()));
    }
    if let Some(sig) = r.get("signature").and_then(Value::as_str) {
        out.push(Event::ThinkingSignature(sig.to_owned()));
    }
}

#[derive(serde::Deserialize)]
struct ToolInputDelta<'a> {
    #[serde(borrow)]
    input: Cow<'a, str>,
}

/// ConverseStream frames → canonical events.
pub struct ConverseStream {
    frames: Frames,
    model: String,
    tools: usize,
}

impl ConverseStream {
    pub fn new(model: &str, max_frame: usize) -> Self {
        ConverseStream { frames: Frames::new(max_frame), model: model.to_owned(), tools: 0 }
    }
}

impl StreamDecoder for ConverseStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        let (model, tools) = (&self.model, &mut self.tools);
        self.frames.feed(bytes, |m| {
            if let Some(e) = failure(&m) {
                out.push(e);
                return;
            }
            let kind = header(&m, ":event-type").unwrap_or_default();
            // Deltas are nearly every frame: read them without building a JSON tree.
            if kind == "contentBlockDelta" {
                if let Ok(d) = serde_json::from_slice::<BlockDelta<'_>>(m.payload()) {
                    match (d.delta.text, d.delta.tool_use) {
                        (Some(t), _) => out.push(Event::Text(t.into_owned())),
                        (None, Some(u)) if *tools > 0 && !u.input.is_empty() => {
                            out.push(Event::ToolArgs { index: *tools - 1, fragment: u.input.into_owned() })
                        }
                        (None, None) => reasoning_delta(m.payload(), out),
                        _ => {}
                    }
                }
                return;
            }
            let Ok(v) = serde_json::from_slice::<Value>(m.payload()) else { return };
            match kind {
                "messageStart" => out.push(Event::Start { id: String::new(), model: model.clone() }),
                "contentBlockStart" => {
                    if let Some(t) = v.pointer("/start/toolUse") {
                        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                        out.push(Event::ToolStart { index: *tools, id: s("toolUseId"), name: s("name") });
                        *tools += 1;
                    }
                }
                "messageStop" => {
                    out.push(Event::Stop(stop_from(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn"))))
                }
                // Usage comes last, after messageStop: it ends the stream.
                "metadata" => {
                    out.push(Event::Usage(usage_from(v.get("usage"))));
                    out.push(Event::End);
                }
                _ => {}
            }
        })
    }
}

/// InvokeModelWithResponseStream frames (`chunk` events whose `bytes` are Anthropic stream
/// events) → canonical events.
pub struct InvokeStream {
    frames: Frames,
    anthropic: anthropic::Decoder,
}

impl InvokeStream {
    pub fn new(max_frame: usize) -> Self {
        InvokeStream { frames: Frames::new(max_frame), anthropic: anthropic::Decoder::default() }
    }
}

impl StreamDecoder for InvokeStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        let inner = &mut self.anthropic;
        self.frames.feed(bytes, |m| {
            if let Some(e) = failure(&m) {
                out.push(e);
                return;
            }
            if let Some((_, event)) = chunk(&m) {
                inner.decode_json(&event, out);
            }
        })
    }
}

/// The Anthropic event a `chunk` frame carries: its JSON as sent (base64-decoded) and parsed.
fn chunk(m: &Message) -> Option<(Vec<u8>, Value)> {
    if header(m, ":event-type") != Some("chunk") {
        return None;
    }
    let v: Value = serde_json::from_slice(m.payload()).ok()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.get("bytes")?.as_str()?).ok()?;
    let event = serde_json::from_slice(&raw).ok()?;
    Some((raw, event))
}

/// InvokeModelWithResponseStream for an Anthropic caller whose body was passed through: each
/// `chunk` carries exactly the event Anthropic itself would have streamed, so it is re-framed as
/// SSE unchanged — fields spillway does not know (thinking signatures, citations, newer block
/// types) reach the caller — and also decoded, for the stream's end and its usage. A Bedrock
/// exception frame becomes Anthropic's `error` event.
pub struct InvokeReframe {
    frames: Frames,
    anthropic: anthropic::Decoder,
}

impl InvokeReframe {
    pub fn new(max_frame: usize) -> Self {
        InvokeReframe { frames: Frames::new(max_frame), anthropic: anthropic::Decoder::default() }
    }

    /// Appends the SSE of every frame completed by `bytes` to `sse`, and its events to `events`.
    pub fn feed(&mut self, bytes: &[u8], sse: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), String> {
        let inner = &mut self.anthropic;
        self.frames.feed(bytes, |m| {
            if let Some(e) = failure(&m) {
                if let Event::Error { overloaded, message } = &e {
                    anthropic::write_error(*overloaded, message, sse);
                }
                events.push(e);
                return;
            }
            let Some((raw, event)) = chunk(&m) else { return };
            let Some(name) = event.get("type").and_then(Value::as_str) else { return };
            sse.extend_from_slice(b"event: ");
            sse.extend_from_slice(name.as_bytes());
            sse.extend_from_slice(b"\ndata: ");
            sse.extend_from_slice(&raw);
            sse.extend_from_slice(b"\n\n");
            inner.decode_json(&event, events);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Wire;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/fixtures/bedrock/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn events(w: Wire, bytes: &[u8], chunk: usize) -> Vec<Event> {
        let mut d = w.stream_decoder("model-x", crate::protocol::DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for part in bytes.chunks(chunk) {
            d.feed(part, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn converse_stream_fixtures_decode_whatever_the_chunking() {
        let bin = fixture("converse_stream.bin");
        let whole = events(Wire::BedrockConverse, &bin, bin.len());
        assert_eq!(events(Wire::BedrockConverse, &bin, 7), whole);
        let text: String =
            whole.iter().filter_map(|e| if let Event::Text(t) = e { Some(t.as_str()) } else { None }).collect();
        assert!(!text.is_empty());
        assert!(matches!(whole.last(), Some(Event::End)));
        assert!(whole.iter().any(|e| matches!(e, Event::Usage(u) if u.input_tokens > 0 && u.output_tokens > 0)));

        let tool = events(Wire::BedrockConverse, &fixture("converse_stream_tool_use.bin"), 13);
        let args: String = tool
            .iter()
            .filter_map(|e| if let Event::ToolArgs { fragment, .. } = e { Some(fragment.as_str()) } else { None })
            .collect();
        assert!(serde_json::from_str::<Value>(&args).unwrap().is_object(), "{args}");
        assert!(tool.contains(&Event::Stop(StopReason::ToolUse)));
    }

    #[test]
    fn exception_frames_after_200_are_errors() {
        for (name, overloaded) in [
            ("converse_stream_midstream_throttling.bin", true),
            ("converse_stream_midstream_service_unavailable.bin", true),
        ] {
            let ev = events(Wire::BedrockConverse, &fixture(name), 64);
            assert!(
                matches!(ev.last(), Some(Event::Error { overloaded: o, .. }) if *o == overloaded),
                "{name}: {ev:?}"
            );
            assert!(!ev.contains(&Event::End));
        }
    }

    #[test]
    fn a_corrupt_frame_is_an_error_not_garbage() {
        let mut bin = fixture("converse_stream.bin");
        bin[20] ^= 0xff;
        let mut d = Wire::BedrockConverse.stream_decoder("m", crate::protocol::DEFAULT_MAX_FRAME);
        assert!(d.feed(&bin, &mut Vec::new()).unwrap_err().contains("corrupt"));
    }

    #[test]
    fn invoke_stream_carries_anthropic_events() {
        let ev = events(Wire::BedrockInvoke, &fixture("invoke_stream_anthropic.bin"), 11);
        assert!(matches!(ev.first(), Some(Event::Start { id, .. }) if id.starts_with("msg_bdrk")));
        assert!(matches!(ev.last(), Some(Event::End)));
        assert!(ev.iter().any(|e| matches!(e, Event::Text(_))));
    }

    #[test]
    fn converse_response_fixtures_decode() {
        let r = decode_response(&fixture("converse_response_tool_use.json"), "m").unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert!(r.content.iter().any(|p| matches!(p, Part::ToolUse { input, .. } if input.is_object())));
        let r = decode_response(&fixture("converse_response.json"), "m").unwrap();
        assert!(r.usage.input_tokens > 0);
    }

    #[test]
    fn converse_request_matches_the_documented_shape() {
        let text = include_str!("../../../tests/fixtures/openai/chat_request.json");
        let mut body: Map<String, Value> = serde_json::from_str(text).unwrap();
        body.retain(|k, _| !k.starts_with('_'));
        let c = crate::protocol::openai::decode_request(&body).unwrap();
        let v = Value::Object(encode_converse(&c).unwrap());
        assert_eq!(v["system"][0]["text"], "You are a concise weather assistant.");
        assert_eq!(v["messages"][0]["content"][1]["image"]["format"], "png");
        assert!(v["messages"][1]["content"].as_array().unwrap().iter().any(|b| b["toolUse"]["input"].is_object()));
        assert_eq!(v["messages"][2]["content"][0]["toolResult"]["status"], "success");
        assert!(v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"].is_object());
        assert!(v.get("model").is_none(), "the model goes in the URL");
        assert_eq!(v["requestMetadata"]["user"], c.user.as_deref().unwrap(), "the end user, for the invocation logs");
        let fixture: Value = serde_json::from_slice(&fixture("converse_request.json")).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(
                fixture.get(key).is_some()
                    || ["additionalModelRequestFields", "requestMetadata"].contains(&key.as_str()),
                "{key} is not a Converse field (tests/schemas.rs checks every field against botocore's model)"
            );
        }
    }
}
