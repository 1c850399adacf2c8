//! Errors spillway itself answers with; `protocol::error_reply` renders them in the caller's own
//! API format.

use http::StatusCode;

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

    /// The sidecar cannot serve the request right now, but will shortly: a 503 the caller should
    /// retry after a second.
    pub fn retry_shortly(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind: "service_unavailable",
            retry_after_s: Some(1),
            ..Self::invalid_request(code, None, message).with_status(StatusCode::SERVICE_UNAVAILABLE)
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::invalid_request(code, None, message).with_status(StatusCode::NOT_FOUND)
    }
}
