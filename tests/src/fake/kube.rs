//! A fake Kubernetes API server for sidecar authentication: HTTPS on 127.0.0.1 with its own CA,
//! the caller's service-account token checked, `TokenReview` answered the way the API server
//! answers for projected tokens (audiences, `authentication.kubernetes.io/pod-name` and
//! `node-name` extras), nodes with their `topology.kubernetes.io/zone` label, and
//! `coordination.k8s.io/v1` Leases with the API server's optimistic concurrency: every write
//! bumps `resourceVersion`, and a replace naming an older one (or a create of an existing Lease)
//! is refused with 409 Conflict.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use spillway_controlplane::kube::Kube;
use spillway_controlplane::webhook::{self, StaticCert};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The control plane's own token: only it may create TokenReviews.
pub const CONTROL_PLANE_TOKEN: &str = "control-plane-sa-token";

/// A projected token the fake knows: whose it is and for which audience.
#[derive(Debug, Clone)]
pub struct PodToken {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub audience: String,
}

#[derive(Default)]
struct Api {
    tokens: HashMap<String, PodToken>,
    zones: HashMap<String, String>,
    reviews: usize,
    /// `leases/ns/name`, `configmaps/ns/name` → the object.
    objects: HashMap<String, Value>,
    next_version: u64,
}

type Shared = Arc<Mutex<Api>>;

pub struct FakeKube {
    api: Shared,
    pub base: String,
    pub ca_pem: String,
    dir: tempfile::TempDir,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let api: Shared = Arc::default();
        let router = Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(review))
            .route("/api/v1/nodes/{name}", get(node))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(|s, h, p, b| create(s, h, p, b, "leases")),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(|s, h, p| read(s, h, p, "leases")).put(|s, h, p, b| replace(s, h, p, b, "leases")),
            )
            .route("/api/v1/namespaces/{ns}/configmaps", post(|s, h, p, b| create(s, h, p, b, "configmaps")))
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(|s, h, p| read(s, h, p, "configmaps")).put(|s, h, p, b| replace(s, h, p, b, "configmaps")),
            )
            .with_state(api.clone());
        let cert = webhook::generate(&["127.0.0.1".into()]).expect("a test certificate");
        let key = webhook::certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).expect("its key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("https://{}", listener.local_addr().expect("an address"));
        tokio::spawn(webhook::serve(listener, webhook::acceptor(Arc::new(StaticCert(key))), router));
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("token"), CONTROL_PLANE_TOKEN).expect("the token file");
        FakeKube { api, base, ca_pem: cert.ca_pem, dir }
    }

    /// A client for the control plane, with its service-account token.
    pub fn client(&self) -> Kube {
        Kube::new(&self.base, self.ca_pem.as_bytes(), self.dir.path().join("token")).expect("a client")
    }

    /// Mints a projected token for `namespace/pod` on `node`, for `audience`.
    pub fn mint(&self, namespace: &str, pod: &str, node: &str, audience: &str) -> String {
        let token = format!("eyJ.{namespace}.{pod}.{audience}.{}", fastrand::u64(..));
        let t = PodToken { namespace: namespace.into(), pod: pod.into(), node: node.into(), audience: audience.into() };
        self.api.lock().unwrap().tokens.insert(token.clone(), t);
        token
    }

    /// Revokes a token (its pod was deleted).
    pub fn revoke(&self, token: &str) {
        self.api.lock().unwrap().tokens.remove(token);
    }

    pub fn set_zone(&self, node: &str, zone: &str) {
        self.api.lock().unwrap().zones.insert(node.into(), zone.into());
    }

    /// A Lease as stored (for a test to look at its holder and transitions).
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.api.lock().unwrap().objects.get(&format!("leases/{namespace}/{name}")).cloned()
    }

    /// A ConfigMap as stored.
    pub fn configmap(&self, namespace: &str, name: &str) -> Option<Value> {
        self.api.lock().unwrap().objects.get(&format!("configmaps/{namespace}/{name}")).cloned()
    }

    /// TokenReviews answered so far.
    pub fn reviews(&self) -> usize {
        self.api.lock().unwrap().reviews
    }
}

fn unauthorized(h: &HeaderMap) -> Option<(StatusCode, axum::Json<Value>)> {
    let ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {CONTROL_PLANE_TOKEN}"));
    (!ok).then(|| (StatusCode::UNAUTHORIZED, axum::Json(json!({"kind": "Status", "message": "Unauthorized"}))))
}

async fn review(State(api): State<Shared>, h: HeaderMap, body: axum::body::Bytes) -> (StatusCode, axum::Json<Value>) {
    if let Some(denied) = unauthorized(&h) {
        return denied;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let token = req["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<&str> =
        req["spec"]["audiences"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut api = api.lock().unwrap();
    api.reviews += 1;
    let status = match api.tokens.get(token) {
        Some(t) if wanted.contains(&t.audience.as_str()) => json!({
            "authenticated": true,
            "audiences": [t.audience],
            "user": {
                "username": format!("system:serviceaccount:{}:default", t.namespace),
                "uid": "5f1c",
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace)],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [t.pod],
                    "authentication.kubernetes.io/pod-uid": ["0c2d"],
                    "authentication.kubernetes.io/node-name": [t.node],
                },
            },
        }),
        // The API server's words for a token minted for another audience.
        Some(_) => {
            json!({"authenticated": false, "error": "[invalid bearer token, token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences [\"spillway\"]]"})
        }
        None => {
            json!({"authenticated": false, "error": "[invalid bearer token, service account token has been invalidated]"})
        }
    };
    let mut out = req.clone();
    out["status"] = status;
    (StatusCode::CREATED, axum::Json(out))
}

async fn node(State(api): State<Shared>, h: HeaderMap, Path(name): Path<String>) -> (StatusCode, axum::Json<Value>) {
    if let Some(denied) = unauthorized(&h) {
        return denied;
    }
    match api.lock().unwrap().zones.get(&name) {
        Some(zone) => (
            StatusCode::OK,
            axum::Json(
                json!({"kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}),
            ),
        ),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"kind": "Status", "message": format!("nodes \"{name}\" not found")})),
        ),
    }
}

fn status(code: StatusCode, message: &str) -> (StatusCode, axum::Json<Value>) {
    (code, axum::Json(json!({"kind": "Status", "message": message, "code": code.as_u16()})))
}

async fn read(
    State(api): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    kind: &str,
) -> (StatusCode, axum::Json<Value>) {
    if let Some(denied) = unauthorized(&h) {
        return denied;
    }
    match api.lock().unwrap().objects.get(&format!("{kind}/{ns}/{name}")) {
        Some(o) => (StatusCode::OK, axum::Json(o.clone())),
        None => status(StatusCode::NOT_FOUND, &format!("{kind} \"{name}\" not found")),
    }
}

/// Stores `object` at the next resourceVersion.
fn store(api: &mut Api, key: String, mut object: Value) -> Value {
    api.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(api.next_version.to_string());
    api.objects.insert(key, object.clone());
    object
}

async fn create(
    State(api): State<Shared>,
    h: HeaderMap,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
    kind: &str,
) -> (StatusCode, axum::Json<Value>) {
    if let Some(denied) = unauthorized(&h) {
        return denied;
    }
    let object: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = format!("{kind}/{ns}/{}", object["metadata"]["name"].as_str().unwrap_or_default());
    let mut api = api.lock().unwrap();
    if api.objects.contains_key(&key) {
        return status(StatusCode::CONFLICT, &format!("{kind} already exists"));
    }
    let stored = store(&mut api, key, object);
    (StatusCode::CREATED, axum::Json(stored))
}

async fn replace(
    State(api): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
    kind: &str,
) -> (StatusCode, axum::Json<Value>) {
    if let Some(denied) = unauthorized(&h) {
        return denied;
    }
    let object: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = format!("{kind}/{ns}/{name}");
    let mut api = api.lock().unwrap();
    let Some(current) = api.objects.get(&key) else {
        return status(StatusCode::NOT_FOUND, "not found");
    };
    if current["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    let stored = store(&mut api, key, object);
    (StatusCode::OK, axum::Json(stored))
}
