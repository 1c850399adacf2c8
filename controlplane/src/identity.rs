//! Who is on the other end of a gRPC stream: the sidecar's identity, verified before the control
//! plane believes a word it says.
//!
//! In Kubernetes a sidecar presents its pod's projected service-account token (audience
//! `spillway`) as `authorization: Bearer …`. The control plane asks the API server about it
//! (TokenReview); the answer names the namespace and pod the token is bound to, and the node it
//! runs on, whose `topology.kubernetes.io/zone` label is the sidecar's zone. The node id is then
//! `namespace/pod`, exactly what the injector sets — but it comes from the API server, not from the
//! request, so a sidecar can report only for itself.
//!
//! `--insecure-self-declared-identity` is the explicit opt-out (a single process on a laptop, a
//! test bench): node ids and zones are taken from the requests, with a warning at start.

use crate::kube::Kube;
use crate::metrics::{AuthFailure, Metrics};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The audience a sidecar's projected token must carry: a token minted for the API server or any
/// other service is refused, so a leaked spillway token is worth nothing elsewhere and vice versa.
pub const AUDIENCE: &str = "spillway";

/// Node ids and zones are labels in maps and views: bounded in length and alphabet.
const MAX_NAME: usize = 253;

/// A sidecar as the control plane knows it for the life of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `namespace/pod` when verified; else what the sidecar declared.
    pub node_id: String,
    /// The zone of the Kubernetes node it runs on, when verified and known.
    pub zone: Option<String>,
    /// False only under the self-declared opt-out.
    pub verified: bool,
}

impl Peer {
    /// The node id a message may carry: empty (use the verified one) or the verified one itself.
    /// Under the opt-out the first declared id is taken and then held for the stream.
    pub fn check_declared(&mut self, declared: &str) -> Result<(), Status> {
        if declared.is_empty() || declared == self.node_id {
            return Ok(());
        }
        if !self.verified && self.node_id.is_empty() {
            self.node_id = valid_name("node id", declared)?.to_owned();
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node id {declared:?} is not this stream's identity {:?}: a sidecar reports only for itself",
            self.node_id
        )))
    }

    /// The zone to file this sidecar's figures under: the verified one, else the declared one.
    pub fn zone<'a>(&'a self, declared: &'a str) -> &'a str {
        self.zone.as_deref().unwrap_or(declared)
    }
}

/// A node id or zone as a label: non-empty, at most 253 bytes, printable ASCII without spaces.
pub fn valid_name<'a>(what: &str, s: &'a str) -> Result<&'a str, Status> {
    if s.is_empty() || s.len() > MAX_NAME || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1 to {MAX_NAME} printable ASCII characters without spaces"
        )));
    }
    Ok(s)
}

/// How the control plane verifies sidecars.
pub enum Authenticator {
    /// Node ids as declared (the explicit plaintext opt-out).
    SelfDeclared,
    /// Projected service-account tokens checked by the Kubernetes API.
    TokenReview(Box<TokenReviewer>),
}

impl Authenticator {
    /// The identity behind a new stream, from its metadata; an error ends the stream before any
    /// of its messages is read.
    pub async fn authenticate(&self, md: &MetadataMap) -> Result<Peer, Status> {
        match self {
            Authenticator::SelfDeclared => Ok(Peer { node_id: String::new(), zone: None, verified: false }),
            Authenticator::TokenReview(r) => {
                let result = match bearer(md) {
                    Ok(token) => r.review(token).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &result {
                    let reason = if e.code() == tonic::Code::Unavailable {
                        AuthFailure::ReviewFailed
                    } else {
                        AuthFailure::Denied
                    };
                    r.metrics.auth_failure(reason);
                }
                result
            }
        }
    }
}

fn bearer(md: &MetadataMap) -> Result<&str, Status> {
    let value = md.get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "no credentials: send the pod's projected service-account token (audience spillway) as a bearer token",
        )
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 16 * 1024)
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    Ok(token)
}

/// Caches answers for a minute: a sidecar opens two streams with one token, and a fleet
/// reconnecting after a control-plane restart must not become a TokenReview storm.
const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 20_000;
/// TokenReviews in flight at once: a flood of made-up tokens (each a cache miss) queues here
/// instead of becoming a flood on the API server.
const REVIEWS_IN_FLIGHT: usize = 32;

pub struct TokenReviewer {
    kube: Kube,
    metrics: Arc<Metrics>,
    /// Namespaces whose sidecars may connect; empty = any.
    namespaces: Vec<String>,
    /// sha256(token) → the verified peer. Tokens themselves are never kept.
    cache: Mutex<HashMap<[u8; 32], (Peer, Instant)>>,
    /// Kubernetes node → its zone label (nodes do not move between zones).
    zones: Mutex<HashMap<String, Option<String>>>,
    in_flight: tokio::sync::Semaphore,
}

impl TokenReviewer {
    pub fn new(kube: Kube, metrics: Arc<Metrics>, namespaces: Vec<String>) -> Self {
        TokenReviewer {
            kube,
            metrics,
            namespaces,
            cache: Mutex::default(),
            zones: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT),
        }
    }

    async fn review(&self, token: &str) -> Result<Peer, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((peer, at)) = lock(&self.cache).get(&key)
            && now.saturating_duration_since(*at) < CACHE_TTL
        {
            return Ok(peer.clone());
        }
        let _permit = self.in_flight.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        let review = crate::kube::token_review(&self.kube, token, AUDIENCE).await.map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            Status::unavailable(format!("cannot verify the token now: {e}"))
        })?;
        let who = review.map_err(|reason| Status::unauthenticated(format!("token refused: {reason}")))?;
        if !self.namespaces.is_empty() && !self.namespaces.contains(&who.namespace) {
            return Err(Status::permission_denied(format!(
                "namespace {:?} may not connect sidecars to this control plane",
                who.namespace
            )));
        }
        let zone = match &who.node {
            Some(node) => self.zone_of(node).await,
            None => None,
        };
        let peer = Peer { node_id: format!("{}/{}", who.namespace, who.pod), zone, verified: true };
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (peer.clone(), now));
        Ok(peer)
    }

    async fn zone_of(&self, node: &str) -> Option<String> {
        if let Some(z) = lock(&self.zones).get(node) {
            return z.clone();
        }
        match crate::kube::node_zone(&self.kube, node).await {
            Ok(zone) => {
                let zone = zone.filter(|z| valid_name("zone", z).is_ok());
                let mut zones = lock(&self.zones);
                if zones.len() >= CACHE_MAX {
                    zones.clear();
                }
                zones.insert(node.to_owned(), zone.clone());
                zone
            }
            Err(e) => {
                // Not cached: the next stream asks again. The figures go under the declared zone.
                tracing::warn!(node, error = %e, "cannot read the node's zone");
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a TokenReview says of an authenticated, pod-bound service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
}

/// Reads a `TokenReview` status: `Ok(Reviewed)` for a token bound to a pod, `Err(reason)` for
/// anything else (unauthenticated, wrong audience, not a service account, not pod-bound).
pub fn reviewed(status: &serde_json::Value) -> Result<Reviewed, String> {
    if status["authenticated"].as_bool() != Some(true) {
        let why = status["error"].as_str().filter(|e| !e.is_empty()).unwrap_or("not authenticated");
        return Err(why.to_owned());
    }
    if let Some(auds) = status["audiences"].as_array()
        && !auds.iter().any(|a| a.as_str() == Some(AUDIENCE))
    {
        return Err(format!("the token's audience is not {AUDIENCE:?}"));
    }
    let user = &status["user"];
    let username = user["username"].as_str().unwrap_or_default();
    let Some(sa) = username.strip_prefix("system:serviceaccount:") else {
        return Err(format!("{username:?} is not a service account"));
    };
    let namespace = sa.split(':').next().unwrap_or_default().to_owned();
    let extra = |k: &str| user["extra"][k][0].as_str().map(str::to_owned);
    let Some(pod) = extra("authentication.kubernetes.io/pod-name") else {
        return Err("the token is not bound to a pod (use a projected service-account token)".into());
    };
    let node = extra("authentication.kubernetes.io/node-name");
    valid_name("namespace", &namespace).map_err(|s| s.message().to_owned())?;
    valid_name("pod", &pod).map_err(|s| s.message().to_owned())?;
    Ok(Reviewed { namespace, pod, node })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(extra: serde_json::Value) -> serde_json::Value {
        json!({"authenticated": true, "audiences": ["spillway"],
               "user": {"username": "system:serviceaccount:shop:checkout", "uid": "u", "groups": [], "extra": extra}})
    }

    #[test]
    fn a_pod_bound_token_names_namespace_pod_and_node() {
        let s = status(json!({"authentication.kubernetes.io/pod-name": ["checkout-7d9f"],
                               "authentication.kubernetes.io/node-name": ["ip-10-0-1-7"]}));
        let r = reviewed(&s).unwrap();
        assert_eq!(
            r,
            Reviewed { namespace: "shop".into(), pod: "checkout-7d9f".into(), node: Some("ip-10-0-1-7".into()) }
        );
    }

    #[test]
    fn tokens_that_do_not_name_one_pod_for_spillway_are_refused() {
        assert!(reviewed(&status(json!({}))).unwrap_err().contains("not bound to a pod"));
        let mut s = status(json!({"authentication.kubernetes.io/pod-name": ["p"]}));
        s["audiences"] = json!(["https://kubernetes.default.svc"]);
        assert!(reviewed(&s).unwrap_err().contains("audience"));
        s["audiences"] = json!(["spillway"]);
        s["user"]["username"] = json!("alice");
        assert!(reviewed(&s).unwrap_err().contains("not a service account"));
        let denied = json!({"authenticated": false, "error": "token has expired"});
        assert_eq!(reviewed(&denied).unwrap_err(), "token has expired");
    }

    #[test]
    fn a_verified_peer_cannot_speak_for_another_node() {
        let mut p = Peer { node_id: "shop/a".into(), zone: Some("z1".into()), verified: true };
        assert!(p.check_declared("").is_ok());
        assert!(p.check_declared("shop/a").is_ok());
        assert_eq!(p.check_declared("shop/b").unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(p.zone("forged"), "z1");
        let mut anon = Peer { node_id: String::new(), zone: None, verified: false };
        anon.check_declared("n1").unwrap();
        assert_eq!(anon.node_id, "n1");
        assert!(anon.check_declared("n2").is_err(), "an opted-out stream still keeps one node id");
        let mut anon = Peer { node_id: String::new(), zone: None, verified: false };
        assert_eq!(anon.check_declared(&"x".repeat(300)).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
