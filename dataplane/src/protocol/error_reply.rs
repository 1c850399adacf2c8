//! spillway's own errors ([`ApiError`]) in the caller's API format. Here, beside the protocols,
//! so that `error` depends on nothing and every protocol module can return an `ApiError`.

use super::Protocol;
use crate::body::{ProxyBody, full};
use crate::error::ApiError;
use http::{HeaderValue, Response, header};

impl ApiError {
    /// The error body in the caller's protocol: OpenAI's `{"error":{"message","type","param","code"}}`
    /// or Anthropic's `{"type":"error","error":{"type","message"}}`.
    pub fn body(&self, protocol: Protocol) -> serde_json::Value {
        protocol.api().error_body(self.status, self.kind, Some(self.code), &self.message, self.param)
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
