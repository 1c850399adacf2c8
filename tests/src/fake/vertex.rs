//! The Vertex AI side of the fake: Gemini (`:generateContent`, `:streamGenerateContent?alt=sse`
//! with CRLF events and no end marker) and Claude (`:rawPredict`, `:streamRawPredict`), behind a
//! bearer token the fake's metadata server hands out.

use super::openai::{Answer, Choice, choose_tool};
use bytes::Bytes;
use serde_json::{Value, json};

/// `(publisher, model, operation)` of a Vertex path
/// `/v1/projects/{p}/locations/{r}/publishers/{publisher}/models/{model}:{operation}`.
pub fn route(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let (_, rest) = rest.split_once("/publishers/")?;
    let (publisher, rest) = rest.split_once("/models/")?;
    let (model, op) = rest.rsplit_once(':')?;
    Some((publisher, model, op))
}

pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The metadata server's token reply (fixture `gcp_metadata_token_response.json`).
pub fn metadata_token(token: &str) -> Bytes {
    Bytes::from(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}).to_string())
}

pub fn gemini_answer(body: &Value, name: &str, chunks: u32, body_len: usize, seq: u64, model: &str) -> Answer {
    let decls = body.pointer("/tools/0/functionDeclarations").and_then(Value::as_array).cloned().unwrap_or_default();
    let specs: Vec<(String, Option<Value>)> = decls
        .iter()
        // Vertex takes either the OpenAPI subset or a whole JSON Schema.
        .filter_map(|d| {
            let schema = d.get("parametersJsonSchema").or(d.get("parameters")).cloned();
            Some((d.get("name")?.as_str()?.to_owned(), schema))
        })
        .collect();
    let config = body.pointer("/toolConfig/functionCallingConfig");
    let choice = match (
        config.and_then(|c| c.get("mode")).and_then(Value::as_str),
        config.and_then(|c| c.pointer("/allowedFunctionNames/0")).and_then(Value::as_str),
    ) {
        (Some("NONE"), _) => Choice::None,
        (_, Some(n)) => Choice::Named(n.to_owned()),
        _ => Choice::First,
    };
    Answer {
        id: format!("vertex-fake{seq}"),
        model: model.to_owned(),
        name: name.to_owned(),
        chunks: chunks.max(1),
        tool_call: choose_tool(specs.iter().map(|(n, s)| (n.as_str(), s.as_ref())), choice),
        prompt_tokens: (body_len as u64 / 4).max(1),
        include_usage: true,
        reasoning: body.pointer("/generationConfig/thinkingConfig").is_some(),
        // Gemini caches long prompts implicitly: say half of one.
        cached_tokens: if body_len > 2_000 { (body_len as u64 / 4) / 2 } else { 0 },
    }
}

/// The thought signature the fake puts on its function calls (base64 of `fake-sig`).
const SIGNATURE: &str = "ZmFrZS1zaWc=";
/// Thinking tokens the fake reports when it reasons.
const THOUGHTS: u64 = 5;

/// Gemini 3 with thinking on refuses a turn that replays a function call without the
/// `thoughtSignature` it came with (400 INVALID_ARGUMENT).
pub fn calls_are_signed(body: &Value) -> bool {
    if body.pointer("/generationConfig/thinkingConfig").is_none() {
        return true;
    }
    let contents = body.get("contents").and_then(Value::as_array).cloned().unwrap_or_default();
    contents
        .iter()
        .filter(|c| c["role"] == "model")
        .flat_map(|c| c.get("parts").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|p| p.get("functionCall").is_some())
        .all(|p| p["thoughtSignature"] == SIGNATURE)
}

fn usage(a: &Answer) -> Value {
    let thoughts = if a.reasoning { THOUGHTS } else { 0 };
    json!({"promptTokenCount": a.prompt_tokens, "cachedContentTokenCount": a.cached_tokens,
           "candidatesTokenCount": a.chunks, "thoughtsTokenCount": thoughts,
           "totalTokenCount": a.prompt_tokens + u64::from(a.chunks) + thoughts, "trafficType": "ON_DEMAND"})
}

fn call_part(a: &Answer) -> Option<Value> {
    let (name, args) = a.tool_call.as_ref()?;
    let mut part =
        json!({"functionCall": {"name": name, "args": serde_json::from_str::<Value>(args).unwrap_or(json!({}))}});
    if a.reasoning {
        part["thoughtSignature"] = SIGNATURE.into();
    }
    Some(part)
}

/// The thought part a reasoning reply starts with.
fn thought(a: &Answer) -> Option<Value> {
    a.reasoning.then(|| json!({"text": "Thinking it over.", "thought": true}))
}

pub fn gemini_complete(a: &Answer) -> Bytes {
    let answer = match call_part(a) {
        Some(p) => p,
        None => json!({"text": (0..a.chunks).map(|i| a.word(i)).collect::<String>()}),
    };
    let parts: Vec<Value> = thought(a).into_iter().chain([answer]).collect();
    let body = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": usage(a), "modelVersion": a.model, "responseId": a.id});
    Bytes::from(body.to_string())
}

fn chunk(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

/// Stream events: no opening, content chunks, and a closing chunk with the finish reason and
/// usage (Gemini sends no end marker).
pub fn gemini_stream(a: &Answer) -> [Vec<Bytes>; 3] {
    let mut content = Vec::new();
    if let Some(t) = thought(a) {
        content.push(chunk(json!({"candidates": [{"content": {"role": "model", "parts": [t]}}],
            "modelVersion": a.model, "responseId": a.id})));
    }
    let closing_parts = match call_part(a) {
        Some(p) => vec![p],
        None => {
            for i in 0..a.chunks {
                content.push(chunk(
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": a.word(i)}]}}],
                    "modelVersion": a.model, "responseId": a.id}),
                ));
            }
            vec![json!({"text": ""})]
        }
    };
    let last = json!({"candidates": [{"content": {"role": "model", "parts": closing_parts}, "finishReason": "STOP"}],
        "usageMetadata": usage(a), "modelVersion": a.model, "responseId": a.id});
    [Vec::new(), content, vec![chunk(last)]]
}

pub fn gemini_stream_error() -> Bytes {
    chunk(
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}),
    )
}

/// A `google.rpc.Status` error body.
pub fn error_body(status: u16) -> Bytes {
    let (name, message) = match status {
        400 => ("INVALID_ARGUMENT", "fake: Request contains an invalid argument."),
        401 => ("UNAUTHENTICATED", "fake: Request had invalid authentication credentials."),
        403 => ("PERMISSION_DENIED", "fake: Permission denied."),
        404 => ("NOT_FOUND", "fake: Publisher model not found."),
        429 => ("RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."),
        503 => ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        _ => ("INTERNAL", "fake: Internal error encountered."),
    };
    Bytes::from(json!({"error": {"code": status, "message": message, "status": name}}).to_string())
}
