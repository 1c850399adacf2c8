//! The few Kubernetes API calls the control plane makes, with the pod's service account: the
//! self-signed webhook mode keeps its certificate in a Secret (so all replicas serve the same one)
//! and writes its CA into the MutatingWebhookConfiguration's `caBundle`; sidecar authentication
//! reviews projected tokens (TokenReview) and reads a node's zone label.
//!
//! Four calls do not justify a Kubernetes client crate; the chart grants exactly these verbs:
//! `get`/`create` on Secrets in the namespace, `get`/`patch` on the one webhook configuration,
//! `create` on TokenReviews (`system:auth-delegator`) and `get` on nodes.

use crate::identity::Reviewed;
use crate::webhook::{self, WebhookCert};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub struct Kube {
    base: String,
    /// Re-read for every call: projected service-account tokens rotate.
    token_file: PathBuf,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Kube {
    /// The API server as seen from inside a pod.
    pub fn in_cluster() -> Result<Kube, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "not running in a pod (no KUBERNETES_SERVICE_HOST)")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let ca =
            std::fs::read(Path::new(SA_DIR).join("ca.crt")).map_err(|e| format!("cannot read the cluster CA: {e}"))?;
        Kube::new(&format!("https://{host}:{port}"), &ca, Path::new(SA_DIR).join("token"))
    }

    pub fn new(base: &str, ca_pem: &[u8], token_file: PathBuf) -> Result<Kube, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(c.map_err(|e| format!("bad cluster CA: {e}"))?).map_err(|e| format!("bad cluster CA: {e}"))?;
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        Ok(Kube {
            base: base.trim_end_matches('/').to_owned(),
            token_file,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// One API call; the status and the JSON body (`Null` if there is none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read the service-account token {}: {e}", self.token_file.display()))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{method} {path}: no answer within 10 s"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

fn failure(what: &str, status: u16, body: &Value) -> String {
    format!("{what}: HTTP {status}: {}", body["message"].as_str().unwrap_or("no message"))
}

fn from_secret(secret: &Value) -> Option<WebhookCert> {
    let field = |k: &str| -> Option<String> {
        let b = B64.decode(secret["data"][k].as_str()?).ok()?;
        String::from_utf8(b).ok()
    };
    Some(WebhookCert { ca_pem: field("ca.crt")?, cert_pem: field("tls.crt")?, key_pem: field("tls.key")? })
}

/// The webhook certificate from Secret `namespace/name`, created first (for `dns_names`) if it does
/// not exist. Replicas starting together race to create it; the losers read the winner's.
pub async fn certificate(
    kube: &Kube,
    namespace: &str,
    name: &str,
    dns_names: &[String],
) -> Result<WebhookCert, String> {
    let path = format!("/api/v1/namespaces/{namespace}/secrets");
    for _ in 0..3 {
        let (status, body) = kube.call(Method::GET, &format!("{path}/{name}"), "application/json", None).await?;
        match status {
            200 => {
                return from_secret(&body)
                    .ok_or_else(|| format!("secret {namespace}/{name} lacks ca.crt, tls.crt or tls.key"));
            }
            404 => {}
            _ => return Err(failure(&format!("reading secret {namespace}/{name}"), status, &body)),
        }
        let cert = webhook::generate(dns_names)?;
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "spillway-control"}},
            "data": {"ca.crt": B64.encode(&cert.ca_pem), "tls.crt": B64.encode(&cert.cert_pem), "tls.key": B64.encode(&cert.key_pem)},
        });
        let (status, body) = kube.call(Method::POST, &path, "application/json", Some(secret)).await?;
        match status {
            200 | 201 => {
                tracing::info!(secret = %format!("{namespace}/{name}"), "webhook certificate created");
                return Ok(cert);
            }
            // Another replica created it first: read theirs.
            409 => continue,
            _ => return Err(failure(&format!("creating secret {namespace}/{name}"), status, &body)),
        }
    }
    Err(format!("secret {namespace}/{name} keeps changing; giving up for now"))
}

/// Writes `ca_pem` into every webhook of MutatingWebhookConfiguration `name`; `Ok(false)` when
/// they all had it already.
pub async fn publish_ca_bundle(kube: &Kube, name: &str, ca_pem: &str) -> Result<bool, String> {
    publish_ca_bundle_to(kube, WebhookKind::Mutating, name, ca_pem).await
}

/// Which kind of webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    Mutating,
    Validating,
}

impl WebhookKind {
    fn resource(self) -> &'static str {
        match self {
            WebhookKind::Mutating => "mutatingwebhookconfigurations",
            WebhookKind::Validating => "validatingwebhookconfigurations",
        }
    }

    fn singular(self) -> &'static str {
        self.resource().trim_end_matches('s')
    }
}

/// [`publish_ca_bundle`] for either kind of webhook configuration.
pub async fn publish_ca_bundle_to(kube: &Kube, kind: WebhookKind, name: &str, ca_pem: &str) -> Result<bool, String> {
    let resource = kind.resource();
    let path = format!("/apis/admissionregistration.k8s.io/v1/{resource}/{name}");
    let (status, body) = kube.call(Method::GET, &path, "application/json", None).await?;
    if status != 200 {
        return Err(failure(&format!("reading {} {name}", kind.singular()), status, &body));
    }
    let bundle = B64.encode(ca_pem);
    let webhooks = body["webhooks"].as_array().cloned().unwrap_or_default();
    let ops: Vec<Value> = webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| w["clientConfig"]["caBundle"].as_str() != Some(&bundle))
        .map(|(i, _)| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    if ops.is_empty() {
        return Ok(false);
    }
    let (status, body) =
        kube.call(Method::PATCH, &path, "application/json-patch+json", Some(Value::Array(ops))).await?;
    if status != 200 {
        return Err(failure(&format!("patching {} {name}", kind.singular()), status, &body));
    }
    tracing::info!(configuration = name, webhooks = webhooks.len(), "webhook CA bundle published");
    Ok(true)
}

/// Asks the API server who `token` belongs to (`POST …/tokenreviews`, the verb the chart grants
/// through `system:auth-delegator`). The outer error is the call failing; the inner one is the
/// API server's verdict against the token.
pub async fn token_review(kube: &Kube, token: &str, audience: &str) -> Result<Result<Reviewed, String>, String> {
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": [audience]},
    });
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (status, body) = kube.call(Method::POST, path, "application/json", Some(review)).await?;
    if !(200..300).contains(&status) {
        return Err(failure("creating a tokenreview", status, &body));
    }
    Ok(crate::identity::reviewed(&body["status"]))
}

/// The `topology.kubernetes.io/zone` label of Kubernetes node `name`, if it has one.
pub async fn node_zone(kube: &Kube, name: &str) -> Result<Option<String>, String> {
    let name = percent_segment(name);
    let (status, body) = kube.call(Method::GET, &format!("/api/v1/nodes/{name}"), "application/json", None).await?;
    if status != 200 {
        return Err(failure(&format!("reading node {name}"), status, &body));
    }
    Ok(body["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str().map(str::to_owned))
}

/// A name from a token is data, not a path: anything outside a DNS label's alphabet is refused.
fn percent_segment(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')).collect()
}

/// The data of ConfigMap `namespace/name` and its `resourceVersion`, or `None` if it does not
/// exist.
pub async fn get_configmap(
    kube: &Kube,
    namespace: &str,
    name: &str,
) -> Result<Option<(serde_json::Map<String, Value>, String)>, String> {
    let path = format!("/api/v1/namespaces/{namespace}/configmaps/{name}");
    let (status, body) = kube.call(Method::GET, &path, "application/json", None).await?;
    match status {
        200 => Ok(Some((
            body["data"].as_object().cloned().unwrap_or_default(),
            body["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned(),
        ))),
        404 => Ok(None),
        _ => Err(failure(&format!("reading configmap {namespace}/{name}"), status, &body)),
    }
}

/// Creates the ConfigMap with `data` (`resource_version` empty) or replaces its data only if it
/// is still at `resource_version`; `Ok(false)` on a conflict (someone wrote in between). Writers
/// of different keys read the whole map and write it back, so none erases another's key.
pub async fn write_configmap(
    kube: &Kube,
    namespace: &str,
    name: &str,
    data: &serde_json::Map<String, Value>,
    resource_version: &str,
) -> Result<bool, String> {
    let mut metadata = json!({"name": name, "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "spillway-control"}});
    if !resource_version.is_empty() {
        metadata["resourceVersion"] = json!(resource_version);
    }
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data});
    let (method, path) = if resource_version.is_empty() {
        (Method::POST, format!("/api/v1/namespaces/{namespace}/configmaps"))
    } else {
        (Method::PUT, format!("/api/v1/namespaces/{namespace}/configmaps/{name}"))
    };
    let (status, body) = kube.call(method, &path, "application/json", Some(body)).await?;
    match status {
        200 | 201 => Ok(true),
        409 => Ok(false),
        _ => Err(failure(&format!("writing configmap {namespace}/{name}"), status, &body)),
    }
}
