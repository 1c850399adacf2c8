//! The Bedrock Runtime side of the fake: `POST /model/{id}/converse[-stream]` and
//! `/invoke[-with-response-stream]`, with SigV4 verification of every request and real AWS
//! event-stream frames (encoded by aws-smithy-eventstream), exception frames included.

use super::anthropic;
use super::openai::{Answer, Choice, choose_tool, fragments};
use aws_credential_types::Credentials;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

/// The operation named by a request path, and the model id in it (percent-decoded).
pub fn route(path: &str) -> Option<(String, &str)> {
    let rest = path.strip_prefix("/model/")?;
    let (model, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" | "converse-stream" | "invoke" | "invoke-with-response-stream" | "count-tokens" => op,
        _ => return None,
    };
    Some((percent_encoding::percent_decode_str(model).decode_utf8().ok()?.into_owned(), op))
}

/// Checks the request's SigV4 signature by signing it again with the same credentials and
/// time, as AWS does; `Err` names the problem.
pub fn verify(creds: &Credentials, region: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let auth = get("authorization").ok_or("missing Authorization")?;
    let date = get("x-amz-date").ok_or("missing X-Amz-Date")?;
    let host = get("host").ok_or("missing Host")?;
    let time = spillway_dataplane::upstream::aws::sigv4::parse_amz_date(date).ok_or("bad X-Amz-Date")?;
    let mut again = http::Request::post(format!("http://{host}{path}")).body(()).map_err(|e| e.to_string())?;
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        again.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
    }
    spillway_dataplane::upstream::aws::sigv4::sign_request(&mut again, body, creds, region, time)?;
    if again.headers()["authorization"] != auth {
        return Err("The request signature we calculated does not match the signature you provided.".into());
    }
    if creds.session_token().is_some() && get("x-amz-security-token") != creds.session_token() {
        return Err("The security token included in the request is invalid.".into());
    }
    Ok(())
}

/// The tool call a Converse request asks for.
pub fn converse_answer(body: &Value, name: &str, chunks: u32, body_len: usize, seq: u64, model: &str) -> Answer {
    let tools = body.pointer("/toolConfig/tools").and_then(Value::as_array).cloned().unwrap_or_default();
    let specs: Vec<(String, Option<Value>)> = tools
        .iter()
        .filter_map(|t| {
            let spec = t.get("toolSpec")?;
            Some((spec.get("name")?.as_str()?.to_owned(), spec.pointer("/inputSchema/json").cloned()))
        })
        .collect();
    let choice = match body.pointer("/toolConfig/toolChoice/tool/name").and_then(Value::as_str) {
        Some(n) => Choice::Named(n.to_owned()),
        None => Choice::First,
    };
    let prompt_tokens = (body_len as u64 / 4).max(1);
    Answer {
        id: format!("bedrock-fake{seq}"),
        model: model.to_owned(),
        name: name.to_owned(),
        chunks: chunks.max(1),
        tool_call: choose_tool(specs.iter().map(|(n, s)| (n.as_str(), s.as_ref())), choice),
        prompt_tokens,
        include_usage: true,
        reasoning: body.pointer("/outputConfig/effort").is_some(),
        // Everything up to a cache point is read from the cache: say half the prompt.
        cached_tokens: if body.to_string().contains("\"cachePoint\"") { prompt_tokens / 2 } else { 0 },
    }
}

/// The signature the fake gives its reasoning, and checks when it is handed back.
const SIGNATURE: &str = "fake-sig-";

/// Bedrock refuses a turn that hands back reasoning it did not sign (a ValidationException).
pub fn history_is_signed(body: &Value) -> bool {
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    messages
        .iter()
        .flat_map(|m| m.get("content").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|b| b.pointer("/reasoningContent/reasoningText").cloned())
        .all(|r| r.get("signature").and_then(Value::as_str).is_some_and(|s| s.starts_with(SIGNATURE)))
}

fn usage(a: &Answer) -> Value {
    json!({"inputTokens": a.prompt_tokens - a.cached_tokens, "outputTokens": a.chunks,
           "cacheReadInputTokens": a.cached_tokens, "cacheWriteInputTokens": 0,
           "totalTokens": a.prompt_tokens + u64::from(a.chunks)})
}

/// A non-streaming Converse reply.
pub fn converse_complete(a: &Answer) -> Bytes {
    let (content, stop) = match &a.tool_call {
        Some((name, args)) => {
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            (json!([{"toolUse": {"toolUseId": "tooluse_fake0", "name": name, "input": input}}]), "tool_use")
        }
        None => (json!([{"text": (0..a.chunks).map(|i| a.word(i)).collect::<String>()}]), "end_turn"),
    };
    let mut content = content;
    if a.reasoning {
        let thought = json!({"reasoningContent": {"reasoningText": {"text": "Thinking it over.", "signature": format!("{SIGNATURE}{}", a.id)}}});
        if let Some(c) = content.as_array_mut() {
            c.insert(0, thought);
        }
    }
    let body = json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
        "usage": usage(a), "metrics": {"latencyMs": 1}});
    Bytes::from(body.to_string())
}

fn frame(headers: [(&str, &str); 3], payload: Value) -> Bytes {
    let mut m = Message::new(Bytes::from(payload.to_string()));
    for (k, v) in headers {
        m = m.add_header(Header::new(k.to_owned(), HeaderValue::String(v.to_owned().into())));
    }
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for a well-formed message.
    let _ = write_message_to(&m, &mut out);
    Bytes::from(out)
}

fn event(kind: &str, payload: Value) -> Bytes {
    frame([(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")], payload)
}

/// An exception frame (`throttlingException`, …), as Bedrock sends after HTTP 200.
pub fn exception(kind: &str, message: &str) -> Bytes {
    frame(
        [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
        json!({"message": message}),
    )
}

/// ConverseStream frames: opening, content, closing (as the other protocols' fakes).
pub fn converse_stream(a: &Answer) -> [Vec<Bytes>; 3] {
    // Real traffic pads payloads with a random-length `p` field; decoders must ignore it.
    let mut opening = vec![event("messageStart", json!({"role": "assistant", "p": "abcdefgh"}))];
    if a.reasoning {
        for delta in [
            json!({"text": "Thinking "}),
            json!({"text": "it over."}),
            json!({"signature": format!("{SIGNATURE}{}", a.id)}),
        ] {
            opening.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"reasoningContent": delta}}),
            ));
        }
        opening.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    }
    let mut content = Vec::new();
    let stop = match &a.tool_call {
        Some((name, args)) => {
            content.push(event(
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_fake0", "name": name}}}),
            ));
            for piece in fragments(args, a.chunks as usize) {
                content.push(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
            "tool_use"
        }
        None => {
            for i in 0..a.chunks {
                content.push(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": a.word(i)}, "p": "xy"}),
                ));
            }
            "end_turn"
        }
    };
    let closing = vec![
        event("contentBlockStop", json!({"contentBlockIndex": 0})),
        event("messageStop", json!({"stopReason": stop})),
        event("metadata", json!({"usage": usage(a), "metrics": {"latencyMs": 1}})),
    ];
    [opening, content, closing]
}

/// InvokeModelWithResponseStream frames: each Anthropic stream event base64-encoded in a `chunk`;
/// Bedrock adds its invocation metrics to `message_stop`.
pub fn invoke_stream(a: &Answer) -> [Vec<Bytes>; 3] {
    anthropic::stream_event_values(a).map(|part| {
        part.into_iter()
            .map(|mut v| {
                if v["type"] == "message_stop" {
                    v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": a.prompt_tokens,
                        "outputTokenCount": a.chunks, "invocationLatency": 5, "firstByteLatency": 1});
                }
                let b64 = base64::engine::general_purpose::STANDARD.encode(v.to_string());
                event("chunk", json!({"bytes": b64, "p": "abc"}))
            })
            .collect()
    })
}

/// An HTTP-level Bedrock error: the type in `x-amzn-ErrorType`, `{"message"}` in the body.
pub fn error(status: u16) -> (&'static str, Bytes) {
    let (kind, message) = match status {
        400 => ("ValidationException", "fake: Malformed input request"),
        403 => ("AccessDeniedException", "fake: You don't have access to the model"),
        404 => ("ResourceNotFoundException", "fake: Could not resolve the foundation model"),
        408 => ("ModelTimeoutException", "fake: Model has timed out"),
        424 => ("ModelErrorException", "fake: The model returned an error"),
        429 => ("ThrottlingException", "Too many tokens, please wait before trying again."),
        503 => ("ServiceUnavailableException", "fake: Service unavailable"),
        _ => ("InternalServerException", "fake: Internal server error"),
    };
    (kind, Bytes::from(json!({"message": message}).to_string()))
}
