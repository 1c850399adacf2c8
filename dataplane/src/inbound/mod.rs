//! Inbound protocols: what applications send to the sidecar, read and checked before any
//! routing happens. The body is parsed once into a JSON object; fields spillway does not act on
//! are kept untouched, so on a same-protocol endpoint new API parameters work without a release.

pub mod anthropic;
pub mod budget;
pub mod openai;
pub mod responses;

use crate::error::ApiError;
use crate::protocol::Protocol;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use std::time::Duration;

/// A checked request in the caller's protocol.
#[derive(Debug, Clone)]
pub struct Request {
    pub protocol: Protocol,
    /// The whole body, as sent, with `model` still the caller's.
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The caller's headers that shape the reply (`anthropic-version`, `anthropic-beta`).
    pub protocol_headers: HeaderMap,
    /// Size of the body as received, for token estimates.
    pub body_len: usize,
    /// The caller's output limit, if it set one (for token estimates).
    pub max_output: Option<u64>,
    /// The latest turn hands back tool results (hedging may be off for such turns).
    pub hands_back_tool_results: bool,
}

/// The first of `fields` that is a whole number: the caller's output limit.
pub(crate) fn limit(body: &Map<String, Value>, fields: &[&str]) -> Option<u64> {
    fields.iter().find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// The last element of the array `field`.
pub(crate) fn last<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).and_then(Value::as_array).and_then(|a| a.last())
}

/// Reads the body (at most `limit` bytes, within `timeout`) after checking its content type. A
/// client that stalls mid-body gets a 408 instead of holding the connection and its buffer.
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_content_type(headers)?;
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(ApiError::invalid_request(
            "request_timeout",
            None,
            format!("the request body did not arrive within {} s", timeout.as_secs()),
        )
        .with_status(StatusCode::REQUEST_TIMEOUT));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::invalid_request(
            "request_too_large",
            None,
            format!("request body is larger than the sidecar's limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(e) => {
            Err(ApiError::invalid_request("body_read_error", None, format!("could not read the request body: {e}")))
        }
    }
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

/// The body as a JSON object.
pub(crate) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match budget::parse(bytes) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(ApiError::invalid_request("invalid_json", None, "request body must be a JSON object")),
        Err(budget::Refusal::Json(e)) => {
            Err(ApiError::invalid_request("invalid_json", None, format!("request body is not valid JSON: {e}")))
        }
        Err(budget::Refusal::TooComplex { budget, .. }) => Err(ApiError::invalid_request(
            "request_too_complex",
            None,
            format!(
                "request body of {} bytes would take more than {budget} bytes in memory as JSON (many tiny objects); send fewer, larger messages",
                bytes.len()
            ),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)),
    }
}

/// `model`: required, a non-empty string.
pub(crate) fn model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None => Err(ApiError::invalid_request(
            "missing_model",
            Some("model"),
            "`model` is required: name a feature there or in the x-spillway-feature header",
        )),
        Some(_) => Err(ApiError::invalid_request("invalid_type", Some("model"), "`model` must be a string")),
    }
}

/// `stream`: optional boolean.
pub(crate) fn stream(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_request("invalid_type", Some("stream"), "`stream` must be a boolean")),
    }
}

/// `messages`: a non-empty array of objects whose `role` is one of `roles`.
pub(crate) fn check_messages(messages: Option<&Value>, roles: &[&str]) -> Result<(), ApiError> {
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
        if !role.as_str().is_some_and(|r| roles.contains(&r)) {
            return Err(ApiError::invalid_request(
                "invalid_message",
                Some("messages"),
                format!("messages[{i}].role is {role}; expected one of {}", roles.join(", ")),
            ));
        }
    }
    Ok(())
}
