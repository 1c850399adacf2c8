//! The leader's views through any replica. Only the leader hears telemetry, so only it can answer
//! `/v1/fleet` and `/v1/feedback` or release a fleet-wide open; the admin API sits behind a
//! Service that picks any replica. A follower forwards those calls — with the caller's token,
//! which the leader checks again — to the admin URL the leader advertises in its Lease.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// Marks a forwarded call: a replica that does not lead never forwards it again (no loops while
/// the Lease still names a leader that has just stepped down).
pub const FORWARDED: &str = "x-spillway-forwarded";

pub struct ToLeader {
    url: watch::Receiver<Option<String>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn unavailable(message: &str) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": message}))).into_response();
    r.headers_mut().insert("retry-after", HeaderValue::from_static("2"));
    r
}

impl ToLeader {
    pub fn new(url: watch::Receiver<Option<String>>) -> Self {
        ToLeader { url, client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// The leader's answer to `method path`, or a 503 saying why there is none.
    pub async fn forward(&self, method: Method, path: &str, headers: &HeaderMap) -> Response {
        if headers.contains_key(FORWARDED) {
            return unavailable("this replica no longer leads; retry");
        }
        let Some(base) = self.url.borrow().clone() else {
            return unavailable("this replica does not lead and no leader is known yet; retry");
        };
        let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", base.trim_end_matches('/')));
        if let Some(token) = headers.get("authorization") {
            req = req.header("authorization", token);
        }
        let Ok(req) = req.header(FORWARDED, "1").body(Full::new(Bytes::new())) else {
            return unavailable("the leader's address is not a URL");
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await;
        let resp = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return unavailable(&format!("the leader at {base} cannot be reached: {e}")),
            Err(_) => return unavailable(&format!("the leader at {base} did not answer within 10 s")),
        };
        let status = resp.status();
        let content_type = resp.headers().get("content-type").cloned();
        let Ok(body) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
            return unavailable("the leader's answer broke off");
        };
        let mut out = (status, body).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert("content-type", ct);
        }
        out
    }
}
