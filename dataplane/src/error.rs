//! Errors spillway itself answers with, rendered in the caller's own API format.

use crate::body::{ProxyBody, full};
use crate::protocol::{Protocol, anthropic};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

/// An error the sidecar answers with (as opposed to an upstream error passed through as-is).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`: machine-readable, stable.
    pub code: &'static str,
    pub message: String,
    /// OpenAI `error.param`: the request field at fault.
    pub param: Option<&'static str>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn invalid_request(code: &'static str, param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param,
            retry_after_s: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::invalid_request(code, None, message).with_status(StatusCode::NOT_FOUND)
    }

    /// The error body in the caller's protocol: OpenAI's `{"error":{"message","type","param","code"}}`
    /// or Anthropic's `{"type":"error","error":{"type","message"}}`.
    pub fn body(&self, protocol: Protocol) -> serde_json::Value {
        match protocol {
            Protocol::OpenAi | Protocol::Responses => {
                json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
            }
            Protocol::Anthropic => anthropic::error_body(anthropic::error_type(self.status.as_u16()), &self.message),
        }
    }

    pub fn into_response(self, protocol: Protocol) -> Response<ProxyBody> {
        let mut resp = Response::new(full(self.body(protocol).to_string()));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
