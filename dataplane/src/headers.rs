//! The header names spillway writes and reads on every request, built at compile time: a name
//! given as `&str` is parsed again on every insert (≈ 400 instructions each).

use http::HeaderName;

/// Names the feature when `model` does not.
pub const FEATURE: HeaderName = HeaderName::from_static("x-spillway-feature");
/// The sidecar's id for the request, on the reply and on every upstream request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-spillway-request-id");
/// Which endpoint answered.
pub const ENDPOINT: HeaderName = HeaderName::from_static("x-spillway-endpoint");
/// How many endpoints were tried.
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-spillway-attempts");
/// The caller's fields a translation dropped.
pub const DROPPED: HeaderName = HeaderName::from_static("x-spillway-dropped");
/// Why the reply came from a PT endpoint's on-demand twin.
pub const SPILLED: HeaderName = HeaderName::from_static("x-spillway-spilled");
/// The official SDKs' cue not to retry on their own.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
