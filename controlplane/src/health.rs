//! `/healthz` (the process answers), `/metrics` (Prometheus) and `/readyz` (a valid snapshot is published, so a new sidecar
//! connecting now gets a config) for the kubelet, on their own plain-HTTP port: the admin API
//! needs a token and the webhook needs TLS, neither of which a probe has.

use crate::ads::Discovery;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

pub fn router(discovery: Arc<Discovery>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(discovery)
}

/// The control plane's own metrics (refused streams and reports, bounded maps), for Prometheus.
async fn metrics(State(d): State<Arc<Discovery>>) -> String {
    d.metrics().encode()
}

async fn ready(State(d): State<Arc<Discovery>>) -> (StatusCode, String) {
    match d.current() {
        Some(s) => (StatusCode::OK, format!("ready: serving version {}\n", s.version)),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no valid routing config yet\n".into()),
    }
}
