//! spillway-proxy: the per-pod sidecar. Applications call it on loopback with the OpenAI API and
//! name a *feature*; it picks the endpoint from the feature's hierarchy, falls back on failure,
//! and explains what it did in response headers, logs and metrics.
//!
//! # Layout
//!
//! The modules follow a request through the sidecar:
//!
//! - [`server`]: listener, connections, graceful shutdown, and the path router;
//! - [`inbound`]: reading and checking what the application sent (`inbound::openai`);
//! - [`routing`]: the live routing table, swapped atomically when the config file changes;
//! - [`managed`]: the same table pushed by the control plane (ACK / NACK, saved to disk);
//! - [`telemetry`]: reports to the control plane, its lease grants and breaker directives, and
//!   user feedback;
//! - [`proxy`]: feature resolution, the fallback loop, the committed reply and its stream guard;
//! - [`health`]: per-endpoint circuit breakers the planner consults and every attempt feeds;
//! - [`upstream`]: the pooled HTTPS client, credentials, provider requests, the failure vocabulary;
//! - [`sse`]: server-sent-event framing shared by the stream paths;
//! - [`metrics`], [`error`], [`body`]: what every layer above reports and returns;
//! - [`log`]: the batched log writer that keeps the access log off the request path's syscalls.

pub mod body;
pub mod canonical;
pub mod capacity;
pub mod error;
pub mod headers;
pub mod health;
pub mod inbound;
pub mod log;
pub mod managed;
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod sse;
pub mod telemetry;
pub mod upstream;

use std::sync::Arc;

/// What every request handler shares.
pub struct AppState {
    pub routing: Arc<routing::Routing>,
    pub metrics: Arc<metrics::Metrics>,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive in full.
    pub body_timeout: std::time::Duration,
    /// The longest upstream frame (SSE event, event-stream message) held while unfinished.
    pub max_upstream_frame_bytes: usize,
    /// Managed mode: which recent requests may be rated, and the ratings not yet reported.
    pub feedback: Option<Arc<telemetry::feedback::Feedback>>,
    /// Sidecar-wide: survives config reloads, which only change its policy.
    pub retry_budget: std::sync::Mutex<health::budget::Budget>,
    /// Cancelled when the shutdown grace period ends: requests still in flight then get an
    /// error in their caller's format (a stream, an error event) instead of a cut connection.
    pub cut: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn budget(&self) -> std::sync::MutexGuard<'_, health::budget::Budget> {
        self.retry_budget.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub use server::{Options, Sidecar};
