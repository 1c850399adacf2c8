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
pub(super) struct Api {
    tokens: HashMap<String, PodToken>,
    zones: HashMap<String, String>,
    reviews: usize,
    /// `leases/ns/name`, `configmaps/ns/name` → the object.
    objects: HashMap<String, Value>,
    next_version: u64,
    /// Every write since `compacted`, for watches (`kube_watch`).
    pub(super) events: Vec<super::kube_watch::Event>,
    /// Watches from before this resourceVersion get 410 Gone.
    pub(super) compacted: u64,
    /// Wakes watches after every write.
    pub(super) changed: Arc<tokio::sync::Notify>,
}

pub(super) type Shared = Arc<Mutex<Api>>;

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
            .merge(super::kube_watch::routes())
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

    /// A kube-rs client for this server (its CA trusted, the control plane's token), as the
    /// control plane's in-cluster client would be.
    pub fn kube_client(&self) -> kube::Client {
        use rustls::pki_types::pem::PemObject;
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("the CA");
        let mut config = kube::Config::new(self.base.parse().expect("the base URL"));
        config.root_cert = Some(vec![ca.to_vec()]);
        config.auth_info.token = Some(CONTROL_PLANE_TOKEN.to_owned().into());
        kube::Client::try_from(config).expect("a kube client")
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

    /// Stores a ConfigMap with `data`, as `kubectl apply` would.
    pub fn put_configmap(&self, namespace: &str, name: &str, data: &Value) {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "namespace": namespace}, "data": data});
        store(&mut self.api.lock().unwrap(), format!("configmaps/{namespace}/{name}"), object);
    }

    /// Forgets the change history up to now: a watch from an older resourceVersion gets 410 Gone,
    /// as after the API server's compaction.
    /// Open watches end, as when an API server restarts; their clients resume from a version
    /// that is now too old.
    pub fn compact(&self) {
        let mut api = self.api.lock().unwrap();
        api.compacted = api.next_version;
        api.events.clear();
        api.changed.notify_waiters();
    }

    /// A SpillwayRouting as stored.
    pub fn routing(&self, namespace: &str, name: &str) -> Option<Value> {
        self.api.lock().unwrap().objects.get(&format!("spillwayroutings/{namespace}/{name}")).cloned()
    }

    /// Writes a SpillwayRouting as kubectl apply would (create or replace), by `who`.
    pub fn apply_routing(&self, namespace: &str, name: &str, spec: Value) -> Value {
        let key = format!("spillwayroutings/{namespace}/{name}");
        let mut api = self.api.lock().unwrap();
        let mut object = api.objects.get(&key).cloned().unwrap_or_else(|| {
            json!({"apiVersion": "spillway.dev/v1alpha1", "kind": "SpillwayRouting",
                   "metadata": {"name": name, "namespace": namespace, "generation": 0, "uid": format!("uid-{name}")}})
        });
        object["spec"] = spec;
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        object["metadata"]["generation"] = json!(generation);
        store(&mut api, key, object)
    }

    /// The ControllerRevisions stored (the config history).
    pub fn revisions(&self, namespace: &str) -> Vec<Value> {
        self.api.lock().unwrap().objects_under(&format!("controllerrevisions/{namespace}/"))
    }

    /// An EndpointSlice of Service `service` with its `admin` port: ready pods at their addresses.
    pub fn endpoint_slice(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        admin_port: u16,
        pods: &[(&str, &str, bool)],
    ) {
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|(pod, ip, ready)| {
                json!({"addresses": [ip], "conditions": {"ready": ready},
                                           "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}})
            })
            .collect();
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "grpc", "port": 7000}, {"name": "admin", "port": admin_port}],
            "endpoints": endpoints});
        store(&mut self.api.lock().unwrap(), format!("endpointslices/{namespace}/{name}"), slice);
    }

    /// What replicas share in namespace `spillway` through this API server: demotions as
    /// objects, the leader's checkpoint in the ConfigMap `spillway-state`.
    pub fn shared_state(&self) -> spillway_controlplane::shared::Shared {
        use spillway_controlplane::shared::{DemotionStore, Shared, SharedDoc};
        Shared {
            demotions: DemotionStore::Objects(kube::Api::namespaced(self.kube_client(), "spillway")),
            checkpoint: SharedDoc::ConfigMap {
                kube: Arc::new(self.client()),
                namespace: "spillway".into(),
                name: "spillway-state".into(),
            },
        }
    }

    /// The SpillwayDemotion objects stored.
    pub fn demotions(&self, namespace: &str) -> Vec<Value> {
        self.api.lock().unwrap().objects_under(&format!("spillwaydemotions/{namespace}/"))
    }

    /// Changes a SpillwayDemotion as `kubectl patch --type merge` would.
    pub fn patch_demotion(&self, namespace: &str, name: &str, patch: &Value) {
        let key = format!("spillwaydemotions/{namespace}/{name}");
        let mut api = self.api.lock().unwrap();
        let mut object = api.object(&key).cloned().expect("the demotion exists");
        json_patch::merge(&mut object, patch);
        store(&mut api, key, object);
    }

    /// Deletes a SpillwayDemotion, as `kubectl delete` would.
    pub fn delete_demotion(&self, namespace: &str, name: &str) {
        remove(&mut self.api.lock().unwrap(), &format!("spillwaydemotions/{namespace}/{name}"));
    }

    /// Deletes a SpillwayRouting.
    pub fn delete_routing(&self, namespace: &str, name: &str) {
        remove(&mut self.api.lock().unwrap(), &format!("spillwayroutings/{namespace}/{name}"));
    }

    /// TokenReviews answered so far.
    pub fn reviews(&self) -> usize {
        self.api.lock().unwrap().reviews
    }
}

pub(super) fn unauthorized(h: &HeaderMap) -> Option<(StatusCode, axum::Json<Value>)> {
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

/// A `Status` as the API server writes it (kube-rs reads `reason`: `get_opt` needs `NotFound`).
pub(super) fn status(code: StatusCode, message: &str) -> (StatusCode, axum::Json<Value>) {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        _ => "",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                      "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body))
}

pub(super) async fn read(
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

/// Stores `object` at the next resourceVersion, and records the change for watches.
pub(super) fn store(api: &mut Api, key: String, mut object: Value) -> Value {
    api.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(api.next_version.to_string());
    let kind = if api.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
    api.objects.insert(key.clone(), object.clone());
    api.events.push(super::kube_watch::Event { version: api.next_version, key, kind, object: object.clone() });
    api.changed.notify_waiters();
    object
}

/// Removes the object at `key`, recording the deletion for watches.
pub(super) fn remove(api: &mut Api, key: &str) -> Option<Value> {
    let mut object = api.objects.remove(key)?;
    api.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(api.next_version.to_string());
    let event = super::kube_watch::Event { version: api.next_version, key: key.to_owned(), kind: "DELETED", object };
    api.events.push(event.clone());
    api.changed.notify_waiters();
    Some(event.object)
}

impl Api {
    pub(super) fn version(&self) -> u64 {
        self.next_version
    }

    pub(super) fn objects_under(&self, prefix: &str) -> Vec<Value> {
        let mut out: Vec<(&String, &Value)> = self.objects.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter().map(|(_, v)| v.clone()).collect()
    }

    pub(super) fn object(&self, key: &str) -> Option<&Value> {
        self.objects.get(key)
    }
}

pub(super) async fn create(
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
    let mut object = object;
    if object.get("spec").is_some() {
        object["metadata"]["generation"] = json!(1);
    }
    let stored = store(&mut api, key, object);
    (StatusCode::CREATED, axum::Json(stored))
}

pub(super) async fn replace(
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
    // As with a status subresource: a replace keeps the stored status, and a changed spec is a
    // new generation.
    let mut object = object;
    if object.get("spec").is_some() {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        let changed = current["spec"] != object["spec"];
        object["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
        object["status"] = current["status"].clone();
    }
    let stored = store(&mut api, key, object);
    (StatusCode::OK, axum::Json(stored))
}
