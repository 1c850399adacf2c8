//! Calls to other replicas' admin APIs, with the caller's token (which they check again).
//!
//! - [`ToLeader`]: only the leader hears telemetry, so only it can answer `/v1/fleet` and
//!   `/v1/feedback` or release a fleet-wide open; the admin API sits behind a Service that picks
//!   any replica. A follower forwards those calls to the admin URL the leader advertises.
//! - [`Peers`]: each replica knows only the sidecars connected to it; `/v1/nodes` and the
//!   rollout in `/v1/config` gather every live replica's share (etcd's replica list, or the
//!   ready endpoints of the control plane's Service).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::watch;

/// Marks a forwarded call: a replica that does not lead never forwards it again (no loops while
/// the Lease still names a leader that has just stepped down).
pub const FORWARDED: &str = "x-spillway-forwarded";

pub struct ToLeader {
    url: watch::Receiver<Option<crate::election::Advertised>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn unavailable(message: &str) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": message}))).into_response();
    r.headers_mut().insert("retry-after", HeaderValue::from_static("2"));
    r
}

impl ToLeader {
    pub fn new(url: watch::Receiver<Option<crate::election::Advertised>>) -> Self {
        ToLeader { url, client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// The leader's answer to `method path`, or a 503 saying why there is none.
    pub async fn forward(&self, method: Method, path: &str, headers: &HeaderMap) -> Response {
        if headers.contains_key(FORWARDED) {
            return unavailable("this replica no longer leads; retry");
        }
        let Some(base) = self.url.borrow().as_ref().map(|a| a.admin.clone()).filter(|u| !u.is_empty()) else {
            return unavailable("this replica does not lead and no leader is known yet; retry");
        };
        match call(&self.client, &base, method, path, headers).await {
            Ok((status, content_type, body)) => {
                let mut out = (status, body).into_response();
                if let Some(ct) = content_type {
                    out.headers_mut().insert("content-type", ct);
                }
                out
            }
            Err(e) => unavailable(&format!("the leader: {e}")),
        }
    }
}

type Answer = (StatusCode, Option<HeaderValue>, Bytes);

/// `method base+path` with the caller's token, marked as forwarded, bounded at 10 s.
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Answer, String> {
    let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", base.trim_end_matches('/')));
    if let Some(token) = headers.get("authorization") {
        req = req.header("authorization", token);
    }
    let req = req.header(FORWARDED, "1").body(Full::new(Bytes::new())).map_err(|_| format!("{base} is not a URL"))?;
    let resp = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("{base} cannot be reached: {e}")),
        Err(_) => return Err(format!("{base} did not answer within 10 s")),
    };
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let body =
        resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|_| format!("{base}'s answer broke off"))?;
    Ok((status, content_type, body))
}

/// The other live replicas, as etcd lists them.
pub struct Peers {
    source: PeerSource,
    me: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Where the live replicas are listed.
pub enum PeerSource {
    /// Each replica's registration under its etcd lease.
    Etcd(crate::etcd::Etcd),
    /// The ready endpoints of the control plane's Service (its EndpointSlices), at their port
    /// named `admin`: the pods the Service would send an admin call to.
    Service { api: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice>, service: String },
}

impl PeerSource {
    async fn list(&self) -> Result<Vec<crate::etcd::replicas::Replica>, String> {
        match self {
            PeerSource::Etcd(etcd) => crate::etcd::replicas::list(etcd).await,
            PeerSource::Service { api, service } => {
                let selector = format!("kubernetes.io/service-name={service}");
                let slices = api
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| format!("listing the endpoints of Service {service}: {e}"))?;
                let mut out = Vec::new();
                for slice in slices.items {
                    let port =
                        slice.ports.iter().flatten().find(|p| p.name.as_deref() == Some("admin")).and_then(|p| p.port);
                    let Some(port) = port else { continue };
                    for e in slice.endpoints {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        let (Some(address), Some(pod)) = (e.addresses.first(), e.target_ref.and_then(|t| t.name))
                        else {
                            continue;
                        };
                        if ready {
                            let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
                            out.push(crate::etcd::replicas::Replica {
                                name: pod,
                                url: format!("http://{host}:{port}"),
                            });
                        }
                    }
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
        }
    }
}

impl Peers {
    pub fn new(etcd: crate::etcd::Etcd, me: &str) -> Self {
        Peers::from(PeerSource::Etcd(etcd), me)
    }

    pub fn from(source: PeerSource, me: &str) -> Self {
        Peers { source, me: me.to_owned(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Every live replica's JSON answer to `GET path` (`mine` for this one), by replica name; a
    /// replica that cannot answer is listed with its error.
    pub async fn gather(
        &self,
        path: &str,
        headers: &HeaderMap,
        mine: Value,
    ) -> Result<Vec<(String, Result<Value, String>)>, String> {
        let replicas = self.source.list().await?;
        let mut out = vec![(self.me.clone(), Ok(mine))];
        let mut calls = tokio::task::JoinSet::new();
        for r in replicas.into_iter().filter(|r| r.name != self.me) {
            let (client, headers, path) = (self.client.clone(), headers.clone(), path.to_owned());
            calls.spawn(async move {
                let answer = match call(&client, &r.url, Method::GET, &path, &headers).await {
                    Ok((status, _, body)) if status.is_success() => {
                        serde_json::from_slice::<Value>(&body).map_err(|e| format!("{}: not JSON: {e}", r.url))
                    }
                    Ok((status, _, body)) => Err(format!("{}: {status}: {}", r.url, String::from_utf8_lossy(&body))),
                    Err(e) => Err(e),
                };
                (r.name, answer)
            });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok(answer) = done {
                out.push(answer);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
