//! The one error vocabulary (docs/design.md §3). Fallback decides on [`FailureKind`] alone, and the kind
//! is decided by status plus the provider's machine-readable type or code, never message text.

use crate::outcome::Outcome;
use crate::protocol::Wire;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider is out of capacity for us (429, overloaded): try elsewhere, it is not broken.
    Throttled,
    /// 5xx, connect errors, resets, timeouts, malformed or truncated replies.
    Unavailable,
    /// The request itself is wrong; every endpoint would say the same. Returned as-is.
    BadRequest,
    /// The endpoint's credentials, permissions, quota or model id are wrong — a fault of that
    /// endpoint's configuration, not of the caller, so another endpoint may serve the request.
    Auth,
    /// The provider's safety filter refused. Returned as-is: routing around a filter is not ours to do.
    ContentFiltered,
    /// The prompt does not fit this model; a later tier may have a larger window.
    ContextTooLong,
    /// This endpoint's wire cannot carry this request (an image URL Converse cannot take, a
    /// field the protocol has no way to say); another endpoint may.
    Unsupported,
}

impl FailureKind {
    pub fn may_fall_back(self) -> bool {
        !matches!(self, FailureKind::BadRequest | FailureKind::ContentFiltered)
    }

    /// Whether the failure says something about the endpoint's health. A request this endpoint
    /// cannot take moves to the next tier but never counts against the endpoint's breaker: the
    /// next request may be fine there.
    pub fn blames_endpoint(self) -> bool {
        !matches!(self, FailureKind::ContextTooLong | FailureKind::Unsupported)
    }
}

/// Whose fault a failure is, for logs and for whoever reads them at 3 a.m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself: every endpoint would refuse it, or this one cannot carry it.
    Client,
    /// The provider or the network to it.
    Upstream,
    /// This sidecar's own configuration or credentials for the endpoint.
    Internal,
}

/// Why one attempt at one endpoint failed: its kind (which decides fallback), its outcome (which
/// the breaker and metrics count), a detail that carries the cause chain (`source_chain`), and
/// when the provider said to come back.
#[derive(Debug, Clone)]
pub struct AttemptFailure {
    pub kind: FailureKind,
    pub outcome: Outcome,
    pub detail: String,
    pub retry_after: Option<Duration>,
    /// The upstream's own error reply, returned to the caller when the failure is not retried.
    pub reply: Option<(StatusCode, Bytes)>,
}

impl AttemptFailure {
    /// Whether another endpoint may still serve the request.
    pub fn may_fall_back(&self) -> bool {
        self.kind.may_fall_back()
    }

    pub fn origin(&self) -> Origin {
        match (self.kind, self.outcome) {
            (_, Outcome::Internal | Outcome::NoCredentials | Outcome::Credentials) => Origin::Internal,
            (
                FailureKind::BadRequest
                | FailureKind::ContentFiltered
                | FailureKind::ContextTooLong
                | FailureKind::Unsupported,
                _,
            ) => Origin::Client,
            _ => Origin::Upstream,
        }
    }

    pub fn unavailable(outcome: Outcome, detail: impl Into<String>) -> Self {
        AttemptFailure {
            kind: FailureKind::Unavailable,
            outcome,
            detail: detail.into(),
            retry_after: None,
            reply: None,
        }
    }

    /// This endpoint has no credential to sign with (an unset key, no cloud identity); another
    /// endpoint may have one.
    pub fn no_credentials(detail: impl Into<String>) -> Self {
        AttemptFailure {
            kind: FailureKind::Auth,
            ..Self::unavailable(Outcome::NoCredentials, format!("no credentials: {}", detail.into()))
        }
    }

    /// This endpoint cannot carry this request; another may.
    pub fn unsupported(detail: impl Into<String>) -> Self {
        AttemptFailure { kind: FailureKind::Unsupported, ..Self::unavailable(Outcome::UnsupportedInput, detail) }
    }

    /// Turns a transport error of the pooled client into a failure.
    pub fn from_client_error(err: &hyper_util::client::legacy::Error) -> Self {
        if err.is_connect() {
            return Self::unavailable(Outcome::ConnectError, format!("cannot connect: {}", source_chain(err)));
        }
        Self::unavailable(Outcome::Reset, format!("connection failed before a response: {}", source_chain(err)))
    }
}

pub fn source_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// Classifies an OpenAI-format error reply (`{"error":{"type","code",…}}`).
pub fn classify_openai(status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    #[derive(serde::Deserialize, Default)]
    struct Envelope {
        #[serde(default)]
        error: Detail,
    }
    #[derive(serde::Deserialize, Default)]
    struct Detail {
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    }
    let detail: Detail = serde_json::from_slice::<Envelope>(&body).map(|e| e.error).unwrap_or_default();
    let code = detail.code.as_ref().and_then(|c| c.as_str()).unwrap_or_default();
    let kind_str = detail.kind.as_deref().unwrap_or_default();
    let kind = match status.as_u16() {
        429 if code == "insufficient_quota" => FailureKind::Auth,
        429 | 529 => FailureKind::Throttled,
        400 if code == "context_length_exceeded" => FailureKind::ContextTooLong,
        400 if code == "content_filter" || code == "content_policy_violation" => FailureKind::ContentFiltered,
        401 | 403 => FailureKind::Auth,
        // A 404 from a provider means the endpoint's model or deployment does not exist there.
        404 | 408 | 409 => FailureKind::Unavailable,
        400..=499 => FailureKind::BadRequest,
        _ => FailureKind::Unavailable,
    };
    let described = match (kind_str, code) {
        (t, "") => t.to_owned(),
        ("", c) => c.to_owned(),
        (t, c) => format!("{t}/{c}"),
    };
    from_reply(kind, &described, status, headers, body)
}

/// `retry-after-ms` (OpenAI's, milliseconds) wins over `retry-after` (seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    if let Some(ms) = get("retry-after-ms").filter(|v| v.is_finite() && *v >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    get("retry-after").filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64)
}

/// Classifies an error reply in the provider's protocol (see [`crate::protocol::wire::WireApi`]).
pub fn classify(wire: Wire, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    wire.api().classify(status, headers, body)
}

/// The failure for an error reply of `kind`; `code` is the provider's machine-readable type.
fn from_reply(kind: FailureKind, code: &str, status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    let described = if code.is_empty() { String::new() } else { format!(" ({code})") };
    AttemptFailure {
        kind,
        outcome: Outcome::of_status(status),
        detail: format!("HTTP {}{described}", status.as_u16()),
        retry_after: retry_after(headers),
        reply: Some((status, body)),
    }
}

/// Kinds for an error reply that carries no type the provider's table knows.
fn by_status(status: StatusCode) -> FailureKind {
    match status.as_u16() {
        429 => FailureKind::Throttled,
        400 => FailureKind::BadRequest,
        401 | 403 => FailureKind::Auth,
        _ => FailureKind::Unavailable,
    }
}

/// Whether an error body is Anthropic's (`{"type":"error",…}`), not Google's.
pub fn anthropic_shaped(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("error"))
}

/// Classifies a `google.rpc.Status` error reply by its `status` name.
pub fn classify_google(status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let name = v.pointer("/error/status").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    let kind = match name.as_str() {
        "RESOURCE_EXHAUSTED" => FailureKind::Throttled,
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => FailureKind::BadRequest,
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => FailureKind::Auth,
        "" => by_status(status),
        _ => FailureKind::Unavailable,
    };
    from_reply(kind, &name, status, headers, body)
}

/// Classifies a Bedrock error reply by its error type: the `x-amzn-ErrorType` header (the part
/// before `:` and after any `#`), else `__type` / `code` in the body. ThrottlingException and
/// ModelNotReadyException share status 429; only the type tells them apart.
pub fn classify_bedrock(status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let raw = headers
        .get("x-amzn-errortype")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| v.get("__type").or(v.get("code")).and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let error_type = raw.split(':').next().unwrap_or_default();
    let error_type = error_type.rsplit('#').next().unwrap_or_default().to_owned();
    let kind = match error_type.as_str() {
        "ThrottlingException" | "ServiceQuotaExceededException" => FailureKind::Throttled,
        "ValidationException" => FailureKind::BadRequest,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException" => FailureKind::Auth,
        "" => by_status(status),
        _ => FailureKind::Unavailable,
    };
    from_reply(kind, &error_type, status, headers, body)
}

/// Classifies an Anthropic error reply (`{"type":"error","error":{"type",…}}`).
pub fn classify_anthropic(status: StatusCode, headers: &HeaderMap, body: Bytes) -> AttemptFailure {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let kind_str = v.pointer("/error/type").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
    let spend_cap =
        v.pointer("/error/details/error_code").and_then(|c| c.as_str()) == Some("enforced_spend_limit_reached");
    let kind = match status.as_u16() {
        // A monthly spend cap is an account problem, not momentary capacity.
        429 if spend_cap => FailureKind::Auth,
        429 | 529 => FailureKind::Throttled,
        401..=403 => FailureKind::Auth,
        404 | 408 | 409 => FailureKind::Unavailable,
        _ if status.is_client_error() => FailureKind::BadRequest,
        _ => FailureKind::Unavailable,
    };
    from_reply(kind, &kind_str, status, headers, body)
}

/// An error the provider sent inside a stream before its first token.
pub fn stream_error(overloaded: bool, message: &str) -> AttemptFailure {
    AttemptFailure {
        kind: if overloaded { FailureKind::Throttled } else { FailureKind::Unavailable },
        outcome: Outcome::StreamError,
        detail: format!("error event in the stream: {message}"),
        retry_after: None,
        reply: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_failure(text: &str) -> AttemptFailure {
        // The fixtures' envelope: {"status", "headers", "body"}.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let status = StatusCode::from_u16(v["status"].as_u64().unwrap() as u16).unwrap();
        let mut headers = HeaderMap::new();
        for (k, val) in v["headers"].as_object().into_iter().flatten() {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), val.as_str().unwrap().parse().unwrap());
        }
        classify_openai(status, &headers, Bytes::from(v["body"].to_string()))
    }

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../../tests/fixtures/openai/", $name))
        };
    }

    #[test]
    fn openai_fixtures_map_to_the_vocabulary() {
        let cases = [
            (fixture!("error_400_unsupported_parameter.json"), FailureKind::BadRequest),
            (fixture!("error_401_invalid_api_key.json"), FailureKind::Auth),
            (fixture!("error_404_model_not_found.json"), FailureKind::Unavailable),
            (fixture!("error_429_rate_limit.json"), FailureKind::Throttled),
            (fixture!("error_429_insufficient_quota.json"), FailureKind::Auth),
            (fixture!("error_500_server_error.json"), FailureKind::Unavailable),
            (fixture!("error_503_overloaded.json"), FailureKind::Unavailable),
        ];
        for (text, want) in cases {
            let f = fixture_failure(text);
            assert_eq!(f.kind, want, "{}", f.detail);
        }
    }

    #[test]
    fn anthropic_fixtures_map_to_the_vocabulary() {
        macro_rules! afixture {
            ($name:literal) => {
                include_str!(concat!("../../../tests/fixtures/anthropic/", $name))
            };
        }
        let cases = [
            (afixture!("error_400_invalid_request.json"), FailureKind::BadRequest),
            (afixture!("error_401_authentication.json"), FailureKind::Auth),
            (afixture!("error_429_rate_limit.json"), FailureKind::Throttled),
            (afixture!("error_500_api_error.json"), FailureKind::Unavailable),
            (afixture!("error_529_overloaded.json"), FailureKind::Throttled),
        ];
        for (text, want) in cases {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let status = StatusCode::from_u16(v["status"].as_u64().unwrap() as u16).unwrap();
            let f = classify(Wire::Anthropic, status, &HeaderMap::new(), Bytes::from(v["body"].to_string()));
            assert_eq!(f.kind, want, "{}", f.detail);
        }
        let cap = Bytes::from_static(br#"{"type":"error","error":{"type":"rate_limit_error","message":"x","details":{"error_code":"enforced_spend_limit_reached"}}}"#);
        assert_eq!(classify_anthropic(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), cap).kind, FailureKind::Auth);
    }

    #[test]
    fn bedrock_fixtures_map_to_the_vocabulary_by_error_type() {
        macro_rules! bfixture {
            ($name:literal) => {
                include_str!(concat!("../../../tests/fixtures/bedrock/", $name))
            };
        }
        let cases = [
            (bfixture!("error_400_validation.json"), FailureKind::BadRequest),
            (bfixture!("error_403_access_denied.json"), FailureKind::Auth),
            (bfixture!("error_408_model_timeout.json"), FailureKind::Unavailable),
            (bfixture!("error_424_model_error.json"), FailureKind::Unavailable),
            (bfixture!("error_429_throttling.json"), FailureKind::Throttled),
            (bfixture!("error_429_model_not_ready.json"), FailureKind::Unavailable),
            (bfixture!("error_500_internal.json"), FailureKind::Unavailable),
            (bfixture!("error_503_service_unavailable.json"), FailureKind::Unavailable),
        ];
        for (text, want) in cases {
            let f = fixture_failure_with(text, Wire::BedrockConverse);
            assert_eq!(f.kind, want, "{}", f.detail);
        }
    }

    #[test]
    fn vertex_fixtures_map_to_the_vocabulary() {
        macro_rules! vfixture {
            ($name:literal) => {
                include_str!(concat!("../../../tests/fixtures/vertex/", $name))
            };
        }
        let cases = [
            (vfixture!("error_400_invalid_argument.json"), Wire::VertexGemini, FailureKind::BadRequest),
            (vfixture!("error_401_unauthenticated.json"), Wire::VertexGemini, FailureKind::Auth),
            (vfixture!("error_403_permission_denied.json"), Wire::VertexGemini, FailureKind::Auth),
            (vfixture!("error_429_resource_exhausted.json"), Wire::VertexGemini, FailureKind::Throttled),
            (vfixture!("error_503_unavailable.json"), Wire::VertexGemini, FailureKind::Unavailable),
            (vfixture!("error_429_resource_exhausted.json"), Wire::VertexAnthropic, FailureKind::Throttled),
            (vfixture!("anthropic_error_529_overloaded.json"), Wire::VertexAnthropic, FailureKind::Throttled),
        ];
        for (text, wire, want) in cases {
            let f = fixture_failure_with(text, wire);
            assert_eq!(f.kind, want, "{}", f.detail);
        }
    }

    fn fixture_failure_with(text: &str, wire: Wire) -> AttemptFailure {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let status = StatusCode::from_u16(v["status"].as_u64().unwrap() as u16).unwrap();
        let mut headers = HeaderMap::new();
        for (k, val) in v["headers"].as_object().into_iter().flatten() {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), val.as_str().unwrap().parse().unwrap());
        }
        classify(wire, status, &headers, Bytes::from(v["body"].to_string()))
    }

    #[test]
    fn rate_limit_fixture_carries_retry_after() {
        let f = fixture_failure(fixture!("error_429_rate_limit.json"));
        assert!(f.retry_after.is_some(), "the 429 fixture has retry-after headers");
        assert!(f.may_fall_back());
    }

    #[test]
    fn classification_ignores_message_text() {
        let body = Bytes::from_static(br#"{"error":{"message":"rate limit exceeded, context_length_exceeded","type":"invalid_request_error","code":null}}"#);
        assert_eq!(classify_openai(StatusCode::BAD_REQUEST, &HeaderMap::new(), body).kind, FailureKind::BadRequest);
        let body = Bytes::from_static(
            br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(classify_openai(StatusCode::BAD_REQUEST, &HeaderMap::new(), body).kind, FailureKind::ContextTooLong);
        let garbage = Bytes::from_static(b"<html>bad gateway</html>");
        assert_eq!(classify_openai(StatusCode::BAD_GATEWAY, &HeaderMap::new(), garbage).kind, FailureKind::Unavailable);
    }

    #[test]
    fn retry_after_ms_wins() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}

#[cfg(test)]
mod origin_tests {
    use super::*;

    #[test]
    fn failures_say_whose_they_are() {
        let refused = classify_openai(StatusCode::BAD_REQUEST, &HeaderMap::new(), Bytes::from_static(b"{}"));
        assert_eq!((refused.origin(), refused.may_fall_back()), (Origin::Client, false));
        let down = classify_openai(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), Bytes::new());
        assert_eq!((down.origin(), down.may_fall_back()), (Origin::Upstream, true));
        let keyless = AttemptFailure::no_credentials("OPENAI_API_KEY is not set");
        assert_eq!((keyless.origin(), keyless.may_fall_back()), (Origin::Internal, true));
        assert_eq!(AttemptFailure::unsupported("no image URLs").origin(), Origin::Client);
    }
}
