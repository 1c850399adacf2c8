//! `POST /v1/messages` requests.

use super::{Request, check_messages, json_object, model, stream};
use crate::error::ApiError;
use crate::protocol::Protocol;
use http::HeaderMap;
use serde_json::Value;

pub fn parse(bytes: &[u8], headers: &HeaderMap) -> Result<Request, ApiError> {
    let body = json_object(bytes)?;
    let model = model(&body)?;
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
        None => {
            return Err(ApiError::invalid_request(
                "missing_max_tokens",
                Some("max_tokens"),
                "`max_tokens` is required",
            ));
        }
        Some(v) => {
            return Err(ApiError::invalid_request(
                "invalid_value",
                Some("max_tokens"),
                format!("`max_tokens` must be a positive integer, got {v}"),
            ));
        }
    }
    // The Messages API takes system messages mid-conversation too (Claude Code sends them).
    check_messages(body.get("messages"), &["user", "assistant", "system"])?;
    if let Some(Value::Array(list)) = body.get("messages") {
        for (i, m) in list.iter().enumerate() {
            if !matches!(m.get("content"), Some(Value::String(_) | Value::Array(_))) {
                return Err(ApiError::invalid_request(
                    "invalid_message",
                    Some("messages"),
                    format!("messages[{i}].content must be a string or an array of content blocks"),
                ));
            }
        }
    }
    if !matches!(body.get("system"), None | Some(Value::String(_) | Value::Array(_))) {
        return Err(ApiError::invalid_request(
            "invalid_type",
            Some("system"),
            "`system` must be a string or an array of text blocks",
        ));
    }
    let stream = stream(&body)?;
    let mut protocol_headers = HeaderMap::new();
    for name in ["anthropic-version", "anthropic-beta"] {
        if let Some(v) = headers.get(name) {
            protocol_headers.insert(name, v.clone());
        }
    }
    let hands_back_tool_results = super::last(&body, "messages")
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_array())
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("type").and_then(|t| t.as_str()) == Some("tool_result")));
    Ok(Request {
        protocol: Protocol::Anthropic,
        model,
        stream,
        protocol_headers,
        body_len: bytes.len(),
        max_output: super::limit(&body, &["max_tokens"]),
        hands_back_tool_results,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes(), &HeaderMap::new()).expect_err("should be rejected")
    }

    #[test]
    fn accepts_the_fixture_request_and_keeps_version_headers() {
        let text = include_str!("../../../tests/fixtures/anthropic/messages_request.json");
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", "2023-06-01".parse().unwrap());
        headers.insert("x-api-key", "not-kept".parse().unwrap());
        let r = parse(text.as_bytes(), &headers).unwrap();
        assert_eq!(r.protocol, Protocol::Anthropic);
        assert_eq!(r.protocol_headers.len(), 1);
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(err(r#"{"model":"f","messages":[{"role":"user","content":"x"}]}"#).param, Some("max_tokens"));
        assert_eq!(
            err(r#"{"model":"f","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#).param,
            Some("max_tokens")
        );
        let e = err(r#"{"model":"f","max_tokens":5,"messages":[{"role":"robot","content":"x"}]}"#);
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
        // A system message mid-conversation is the API's own.
        let ok = r#"{"model":"f","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"system","content":"Be brief."}]}"#;
        assert!(parse(ok.as_bytes(), &HeaderMap::new()).is_ok());
        let e = err(r#"{"model":"f","max_tokens":5,"messages":[{"role":"user","content":5}]}"#);
        assert!(e.message.contains("messages[0].content"), "{}", e.message);
        assert_eq!(
            err(r#"{"model":"f","max_tokens":5,"messages":[{"role":"user","content":"x"}],"system":3}"#).param,
            Some("system")
        );
    }
}
