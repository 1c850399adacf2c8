//! The injector over HTTPS and the self-signed bootstrap against a fake Kubernetes API server
//! (HTTPS, bearer token checked, Secrets and a MutatingWebhookConfiguration kept in memory,
//! JSON Patch applied with the `json-patch` crate).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use spillway_controlplane::inject::{InjectOptions, serve as inject};
use spillway_controlplane::kube::{self, Kube};
use spillway_controlplane::webhook::{self, StaticCert, WebhookCert};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "test-service-account-token";

#[derive(Default)]
struct Api {
    secrets: HashMap<String, Value>,
    creates: usize,
    webhook_config: Value,
}

type Shared = Arc<Mutex<Api>>;

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn status(code: StatusCode, message: &str) -> (StatusCode, axum::Json<Value>) {
    (code, axum::Json(json!({"kind": "Status", "message": message, "code": code.as_u16()})))
}

async fn get_secret(
    State(s): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    match s.lock().unwrap().secrets.get(&format!("{ns}/{name}")) {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())),
        None => status(StatusCode::NOT_FOUND, &format!("secrets \"{name}\" not found")),
    }
}

async fn create_secret(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let key = format!("{ns}/{}", v["metadata"]["name"].as_str().unwrap());
    let mut api = s.lock().unwrap();
    if api.secrets.contains_key(&key) {
        return status(StatusCode::CONFLICT, "already exists");
    }
    api.creates += 1;
    api.secrets.insert(key, v.clone());
    (StatusCode::CREATED, axum::Json(v))
}

async fn webhook_config(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let api = s.lock().unwrap();
    if api.webhook_config["metadata"]["name"] != name {
        return status(StatusCode::NOT_FOUND, "not found");
    }
    (StatusCode::OK, axum::Json(api.webhook_config.clone()))
}

async fn patch_webhook_config(State(s): State<Shared>, h: HeaderMap, body: Bytes) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json-patch+json") {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not a JSON patch");
    }
    let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
    let mut api = s.lock().unwrap();
    json_patch::patch(&mut api.webhook_config, &patch).unwrap();
    (StatusCode::OK, axum::Json(api.webhook_config.clone()))
}

/// A fake API server on 127.0.0.1 and a client for it, trusting its CA.
async fn api_server() -> (Shared, Kube, tempfile::TempDir) {
    let state: Shared = Arc::new(Mutex::new(Api {
        webhook_config: json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "spillway-injector"},
            "webhooks": [{"name": "pods.spillway.dev", "clientConfig": {"service": {"name": "spillway-control", "namespace": "spillway", "path": "/inject"}}},
                         {"name": "pods-opt-in.spillway.dev", "clientConfig": {"service": {"name": "spillway-control", "namespace": "spillway", "path": "/inject"}}}]}),
        ..Default::default()
    }));
    let router = Router::new()
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
        .route("/api/v1/namespaces/{ns}/secrets", post(create_secret))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
            get(webhook_config).patch(patch_webhook_config),
        )
        // The same fake configuration stands for the validating one (SpillwayRouting checks).
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
            get(webhook_config).patch(patch_webhook_config),
        )
        .with_state(state.clone());
    let cert = webhook::generate(&["127.0.0.1".into()]).unwrap();
    let key = webhook::certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(webhook::serve(listener, webhook::acceptor(Arc::new(StaticCert(key))), router));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let kube = Kube::new(&base, cert.ca_pem.as_bytes(), dir.path().join("token")).unwrap();
    (state, kube, dir)
}

fn names() -> Vec<String> {
    vec!["spillway-control.spillway.svc".into(), "spillway-control.spillway.svc.cluster.local".into()]
}

#[tokio::test]
async fn replicas_share_one_certificate_and_its_ca_reaches_every_webhook() {
    let (state, kube, _dir) = api_server().await;
    // Two replicas bootstrapping at once: one creates the Secret, both serve what it holds.
    let names = names();
    let (a, b) = tokio::join!(
        kube::certificate(&kube, "spillway", "spillway-webhook-tls", &names),
        kube::certificate(&kube, "spillway", "spillway-webhook-tls", &names)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(state.lock().unwrap().creates, 1);
    let secret = state.lock().unwrap().secrets["spillway/spillway-webhook-tls"].clone();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(B64.decode(secret["data"]["tls.crt"].as_str().unwrap()).unwrap(), a.cert_pem.as_bytes());
    // A restart reads it back.
    let again = kube::certificate(&kube, "spillway", "spillway-webhook-tls", &names).await.unwrap();
    assert_eq!(again, a);

    assert!(kube::publish_ca_bundle(&kube, "spillway-injector", &a.ca_pem).await.unwrap());
    let config = state.lock().unwrap().webhook_config.clone();
    for w in config["webhooks"].as_array().unwrap() {
        assert_eq!(B64.decode(w["clientConfig"]["caBundle"].as_str().unwrap()).unwrap(), a.ca_pem.as_bytes());
    }
    assert!(!kube::publish_ca_bundle(&kube, "spillway-injector", &a.ca_pem).await.unwrap(), "already there");
    let e = kube::publish_ca_bundle(&kube, "missing", &a.ca_pem).await.unwrap_err();
    assert!(e.contains("mutatingwebhookconfiguration missing: HTTP 404"), "{e}");
    // The validating configuration (SpillwayRouting admission) gets it the same way.
    {
        let mut api = state.lock().unwrap();
        api.webhook_config["metadata"]["name"] = json!("spillway-injector-routing");
        api.webhook_config["webhooks"][0]["clientConfig"]["caBundle"] = json!("stale");
    }
    let validating = kube::WebhookKind::Validating;
    assert!(kube::publish_ca_bundle_to(&kube, validating, "spillway-injector-routing", &a.ca_pem).await.unwrap());
    let e = kube::publish_ca_bundle_to(&kube, validating, "missing", &a.ca_pem).await.unwrap_err();
    assert!(e.contains("validatingwebhookconfiguration missing: HTTP 404"), "{e}");
}

#[tokio::test]
async fn api_errors_name_the_call_and_the_status() {
    let (_state, kube, dir) = api_server().await;
    std::fs::write(dir.path().join("token"), "a-revoked-token").unwrap();
    let e = kube::certificate(&kube, "spillway", "spillway-webhook-tls", &names()).await.unwrap_err();
    assert_eq!(e, "reading secret spillway/spillway-webhook-tls: HTTP 401: Unauthorized");
}

/// POSTs `body` to the injector over TLS, verifying its certificate as the API server would.
async fn post_inject(addr: std::net::SocketAddr, cert: &WebhookCert, body: Vec<u8>) -> (u16, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(cert.ca_pem.as_bytes()).unwrap()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("spillway-control.spillway.svc").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/inject?timeout=10s")
        .header("host", "spillway-control.spillway.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_injector_answers_admission_reviews_over_tls() {
    let cert = webhook::generate(&names()).unwrap();
    let key = webhook::certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let opts = Arc::new(InjectOptions::default());
    let router = Router::new().route(
        "/inject",
        post(move |body: Bytes| {
            let opts = opts.clone();
            async move { inject(&opts, body).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve(listener, webhook::acceptor(Arc::new(StaticCert(key))), router));

    let review =
        std::fs::read(format!("{}/tests/fixtures/admission/pod-deployment.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (status, body) = post_inject(addr, &cert, review).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(v["response"]["patchType"], "JSONPatch");

    let (status, body) = post_inject(addr, &cert, b"{\"kind\": \"Pod\"".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an AdmissionReview"));
}
