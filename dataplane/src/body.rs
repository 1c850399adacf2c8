//! The one response body type every route returns.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::convert::Infallible;

/// Streams never fail at the HTTP layer: an upstream failure becomes an error event in the
/// client's protocol, so the body's error type is uninhabited.
pub type ProxyBody = UnsyncBoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A whole reply of `content_type`.
pub fn text(status: http::StatusCode, content_type: &'static str, body: String) -> http::Response<ProxyBody> {
    let mut r = http::Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}
