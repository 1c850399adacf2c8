//! `POST /v1/chat/completions`: read, bound and check the request before any routing happens.
//!
//! The body is parsed once into a JSON object. Fields spillway does not act on are kept untouched
//! and passed to OpenAI-compatible upstreams, so new OpenAI parameters work without a release.

use crate::error::ApiError;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};

/// A checked chat-completions request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The whole body, as sent, with `model` still the caller's.
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// Reads the body (at most `limit` bytes) and checks it.
pub async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<ChatRequest, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_content_type(headers)?;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ApiError::invalid_request(
                "request_too_large",
                None,
                format!("request body is larger than the sidecar's limit of {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        Err(e) => {
            return Err(ApiError::invalid_request(
                "body_read_error",
                None,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    parse(&bytes)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    // A missing content type is tolerated (some clients omit it); a different one is a mistake,
    // most often `curl -d` sending a form.
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = ct.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::invalid_request(
        "unsupported_content_type",
        None,
        format!("Content-Type must be application/json, got `{}`", ct.to_str().unwrap_or("<non-ascii>")),
    )
    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
}

pub fn parse(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_request("invalid_json", None, format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid_request("invalid_json", None, "request body must be a JSON object"));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::invalid_request(
                "missing_model",
                Some("model"),
                "`model` is required: name a feature there or in the x-spillway-feature header",
            ));
        }
        Some(_) => return Err(ApiError::invalid_request("invalid_type", Some("model"), "`model` must be a string")),
    };
    check_messages(body.get("messages"))?;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_request("invalid_type", Some("stream"), "`stream` must be a boolean")),
    };
    if !stream && body.get("stream_options").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            Some("stream_options"),
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    Ok(ChatRequest { body, model, stream })
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let list = match messages {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("missing_messages", Some("messages"), "`messages` is required"));
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ApiError::invalid_request("invalid_type", Some("messages"), "`messages` must be an array"));
        }
    };
    if list.is_empty() {
        return Err(ApiError::invalid_request(
            "empty_messages",
            Some("messages"),
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in list.iter().enumerate() {
        let Some(role) = m.get("role") else {
            return Err(ApiError::invalid_request(
                "invalid_message",
                Some("messages"),
                format!("messages[{i}] must be an object with a `role`"),
            ));
        };
        let ok = role.as_str().is_some_and(|r| ROLES.contains(&r));
        if !ok {
            return Err(ApiError::invalid_request(
                "invalid_message",
                Some("messages"),
                format!("messages[{i}].role is {role}; expected one of {}", ROLES.join(", ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes()).expect_err("should be rejected")
    }

    #[test]
    fn keeps_unknown_fields_and_reads_stream_flag() {
        let r = parse(
            br#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":7,"x_new":{"a":1}}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.model, "chat");
        assert_eq!(r.body["seed"], 7);
        assert_eq!(r.body["x_new"]["a"], 1);
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(err("{nope").code, "invalid_json");
        assert_eq!(err("[1]").code, "invalid_json");
        assert_eq!(err(r#"{"messages":[{"role":"user"}]}"#).param, Some("model"));
        let e = err(r#"{"model":"chat"}"#);
        assert_eq!((e.code, e.param), ("missing_messages", Some("messages")));
        assert_eq!(err(r#"{"model":"chat","messages":[]}"#).code, "empty_messages");
        let e = err(r#"{"model":"chat","messages":[{"role":"robot","content":"x"}]}"#);
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
        assert_eq!(err(r#"{"model":"chat","messages":[{"role":"user"}],"stream":"yes"}"#).param, Some("stream"));
        assert_eq!(
            err(r#"{"model":"chat","messages":[{"role":"user"}],"stream_options":{"include_usage":true}}"#).param,
            Some("stream_options")
        );
    }
}
