//! The sidecar injector: a mutating admission webhook (`POST /inject`) that adds the spillway
//! sidecar to pods, the way Istio injects Envoy.
//!
//! # Layout
//!
//! - [`review`]: the AdmissionReview v1 wire types;
//! - [`manifest`]: the same injection applied to YAML files (`spillway-control inject`);
//! - this module: deciding whether a pod gets the sidecar and building the JSON Patch.
//!
//! Which namespaces are injected is the webhook configuration's `namespaceSelector` (the API
//! server applies it before calling us). A pod opts out with `spillway.dev/inject: "false"`; a
//! pod that already has a `spillway-proxy` container is left alone, so re-invocation is safe.
//! (The label `spillway.dev/inject: "false"` opts out as well.)
//!
//! The sidecar is a native sidecar (an init container with `restartPolicy: Always`, placed first)
//! so it starts — and its startup probe passes — before other init containers and the app, and
//! stops after them. Its settings travel as environment variables, which the exec probe
//! (`spillway-proxy --probe-ready`) inherits.
//!
//! Injection never blocks a pod because of what the pod's author wrote: a malformed optional
//! annotation becomes a warning (shown by kubectl) and the default is used.

pub mod manifest;
pub mod review;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use review::{AdmissionResponse, AdmissionReview, ReviewResponse};
use serde_json::{Value, json};

pub const CONTAINER: &str = "spillway-proxy";
const VOLUME: &str = "spillway-state";
const STATE_DIR: &str = "/var/run/spillway";
const TOKEN_VOLUME: &str = "spillway-token";
const TOKEN_DIR: &str = "/var/run/secrets/spillway";
const CLIENT_CERT_VOLUME: &str = "spillway-client-cert";
const CLIENT_CERT_DIR: &str = "/var/run/secrets/spillway-client";
const PREFIX: &str = "spillway.dev/";

/// What every injected sidecar looks like; flags of `spillway-control serve`.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    pub image: String,
    pub pull_policy: Option<String>,
    /// The control plane's gRPC address as sidecars reach it.
    pub control_plane: String,
    pub port: u16,
    pub cpu: String,
    pub memory: String,
    /// A Secret (in the pod's namespace) whose keys become the sidecar's environment: the
    /// provider credentials the routing config names in `auth.env`.
    pub credentials_secret: Option<String>,
    /// Point the app's OpenAI and Anthropic SDKs at the sidecar (`OPENAI_BASE_URL`,
    /// `ANTHROPIC_BASE_URL`) unless the container sets them itself.
    pub app_env: bool,
    /// The CA (PEM) that signs the control plane's gRPC certificate: with it the sidecar speaks
    /// TLS and checks the server. Public material, so it travels as an environment variable.
    pub control_plane_ca_pem: Option<String>,
    /// Project a service-account token for audience `spillway` into the sidecar: its identity
    /// for the control plane (see `identity`).
    pub identity_token: bool,
    /// Environment variables a snapshot may name as a credential (`*` matches any run of
    /// characters); what the injected sidecar is told by `SPILLWAY_ALLOW_SECRET_ENV`.
    pub allow_secret_env: String,
    /// A `kubernetes.io/tls` Secret in the pod's namespace with the sidecar's client certificate,
    /// for a control plane that requires mutual TLS.
    pub client_cert_secret: Option<String>,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            image: "ghcr.io/spillway/spillway-proxy:latest".into(),
            pull_policy: None,
            control_plane: "http://spillway-control.spillway.svc:7000".into(),
            port: 4000,
            cpu: "50m".into(),
            memory: "64Mi".into(),
            credentials_secret: None,
            app_env: true,
            control_plane_ca_pem: None,
            identity_token: true,
            allow_secret_env: "*_API_KEY".into(),
            client_cert_secret: None,
        }
    }
}

/// Answers one AdmissionReview body. Only a body that is not an AdmissionReview at all is an
/// error (400); anything about the pod itself is admitted, with warnings when due.
pub fn handle(opts: &InjectOptions, body: &[u8]) -> Result<ReviewResponse, String> {
    let review: AdmissionReview = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.kind != "AdmissionReview" || !review.api_version.starts_with("admission.k8s.io/") {
        return Err(format!("not an AdmissionReview: apiVersion {:?}, kind {:?}", review.api_version, review.kind));
    }
    let req = review.request.ok_or("AdmissionReview without a request")?;
    let response = if req.kind.kind != "Pod" || req.operation != "CREATE" {
        AdmissionResponse::allow(&req.uid, Vec::new())
    } else {
        let (ops, warnings) = plan(opts, &req.object);
        let pod = pod_name(&req.object);
        if ops.is_empty() {
            tracing::debug!(namespace = %req.namespace, pod, "pod not injected");
            AdmissionResponse::allow(&req.uid, warnings)
        } else {
            tracing::info!(namespace = %req.namespace, pod, dry_run = req.dry_run, warnings = warnings.len(), "injecting the sidecar");
            AdmissionResponse::patch(&req.uid, &ops, warnings)
        }
    };
    Ok(ReviewResponse { api_version: review.api_version, kind: review.kind, response })
}

/// axum handler for `POST /inject`.
pub async fn serve(opts: &InjectOptions, body: Bytes) -> Response {
    match handle(opts, &body) {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "malformed admission request");
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

fn pod_name(pod: &Value) -> String {
    let m = &pod["metadata"];
    m["name"].as_str().filter(|n| !n.is_empty()).or(m["generateName"].as_str()).unwrap_or("<unnamed>").to_owned()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"].get(format!("{PREFIX}{key}")).and_then(Value::as_str)
}

/// A Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1G`, `1e3`).
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit());
    let suffix_ok = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].contains(&suffix);
    number_ok && suffix_ok
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn has_container(pod: &Value, name: &str) -> bool {
    ["containers", "initContainers"]
        .iter()
        .any(|list| pod["spec"][list].as_array().is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some(name))))
}

/// The JSON Patch that injects `pod` (empty: leave it alone) and the warnings for its author.
pub fn plan(opts: &InjectOptions, pod: &Value) -> (Vec<Value>, Vec<String>) {
    let mut warnings = Vec::new();
    if !pod["spec"].is_object() {
        warnings.push("spillway: the pod has no spec; sidecar not injected".to_owned());
        return (Vec::new(), warnings);
    }
    // Opting out by label works too, so that an objectSelector can match the same key.
    if pod["metadata"]["labels"][format!("{PREFIX}inject")].as_str() == Some("false") {
        return (Vec::new(), warnings);
    }
    match annotation(pod, "inject") {
        Some("false") => return (Vec::new(), warnings),
        None | Some("true") => {}
        Some(other) => warnings.push(format!(
            "spillway: annotation {PREFIX}inject={other:?} is neither \"true\" nor \"false\"; injecting as usual"
        )),
    }
    if has_container(pod, CONTAINER) {
        return (Vec::new(), warnings);
    }
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        warnings.push(
            "spillway: hostNetwork pods share the node's loopback; sidecar not injected (run it standalone)".into(),
        );
        return (Vec::new(), warnings);
    }

    let mut port = opts.port;
    if let Some(p) = annotation(pod, "proxy-port") {
        match p.parse::<u16>() {
            Ok(n) if n >= 1024 => port = n,
            _ => warnings.push(format!(
                "spillway: annotation {PREFIX}proxy-port={p:?} is not a port from 1024 to 65535; using {port}"
            )),
        }
    }
    let mut quantity = |key: &str, default: &str| match annotation(pod, key) {
        Some(q) if is_quantity(q) => q.to_owned(),
        Some(q) => {
            warnings
                .push(format!("spillway: annotation {PREFIX}{key}={q:?} is not a resource quantity; using {default}"));
            default.to_owned()
        }
        None => default.to_owned(),
    };
    let (cpu, memory) = (quantity("proxy-cpu", &opts.cpu), quantity("proxy-memory", &opts.memory));
    let app_env = match annotation(pod, "app-env") {
        Some("false") => false,
        Some("true") | None => opts.app_env,
        Some(other) => {
            warnings.push(format!(
                "spillway: annotation {PREFIX}app-env={other:?} is neither \"true\" nor \"false\"; using {}",
                opts.app_env
            ));
            opts.app_env
        }
    };

    let credentials = match annotation(pod, "credentials-secret") {
        Some(name) if is_dns_subdomain(name) => Some(name.to_owned()),
        Some(name) => {
            warnings.push(format!(
                "spillway: annotation {PREFIX}credentials-secret={name:?} is not a Secret name; {}",
                opts.credentials_secret
                    .as_deref()
                    .map_or("no credentials Secret used".into(), |d| format!("using {d}"))
            ));
            opts.credentials_secret.clone()
        }
        None => opts.credentials_secret.clone(),
    };

    let listen = format!("127.0.0.1:{port}");
    let mut sidecar = json!({
        "name": CONTAINER,
        "image": opts.image,
        "restartPolicy": "Always",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "SPILLWAY_NODE_ID", "value": "$(POD_NAMESPACE)/$(POD_NAME)"},
            // Set where the cluster copies the node's zone onto pods (PodTopologyLabels); empty
            // otherwise, and the fleet view files the sidecar under "unknown".
            {"name": "SPILLWAY_ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}},
            {"name": "SPILLWAY_CONTROL_PLANE", "value": opts.control_plane},
            {"name": "SPILLWAY_LISTEN", "value": listen},
            {"name": "SPILLWAY_SNAPSHOT_FILE", "value": format!("{STATE_DIR}/snapshot.json")},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": VOLUME, "mountPath": STATE_DIR}],
        // The sidecar binds loopback only, out of the kubelet's reach: probes run inside it.
        "startupProbe": {"exec": {"command": ["spillway-proxy", "--probe-ready"]},
            "periodSeconds": 1, "failureThreshold": 120, "timeoutSeconds": 2},
        "livenessProbe": {"exec": {"command": ["spillway-proxy", "--probe-live"]},
            "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
    });
    if let Some(p) = &opts.pull_policy {
        sidecar["imagePullPolicy"] = json!(p);
    }
    if let Some(secret) = credentials {
        sidecar["envFrom"] = json!([{"secretRef": {"name": secret}}]);
    }
    let env = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut extra_env = vec![env("SPILLWAY_ALLOW_SECRET_ENV", &opts.allow_secret_env)];
    if let Some(ca) = &opts.control_plane_ca_pem {
        extra_env.push(env("SPILLWAY_CONTROL_PLANE_CA_PEM", ca));
    }
    let mut volumes = vec![json!({"name": VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}})];
    if opts.identity_token {
        extra_env.push(env("SPILLWAY_CONTROL_PLANE_TOKEN_FILE", &format!("{TOKEN_DIR}/token")));
        // Bound to this pod and to spillway's audience; the kubelet rotates it well before the
        // hour is up, and the sidecar re-reads it on every connection.
        volumes.push(json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken":
            {"audience": "spillway", "expirationSeconds": 3600, "path": "token"}}]}}));
        if let Some(mounts) = sidecar["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        }
    }
    if let Some(secret) = &opts.client_cert_secret {
        extra_env.push(env("SPILLWAY_CONTROL_PLANE_CERT", &format!("{CLIENT_CERT_DIR}/tls.crt")));
        extra_env.push(env("SPILLWAY_CONTROL_PLANE_KEY", &format!("{CLIENT_CERT_DIR}/tls.key")));
        volumes.push(json!({"name": CLIENT_CERT_VOLUME, "secret": {"secretName": secret}}));
        if let Some(mounts) = sidecar["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": CLIENT_CERT_VOLUME, "mountPath": CLIENT_CERT_DIR, "readOnly": true}));
        }
    }
    if let Some(list) = sidecar["env"].as_array_mut() {
        list.extend(extra_env);
    }

    let mut ops = Vec::new();
    let spec = &pod["spec"];
    if spec["volumes"].is_array() {
        for volume in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }
    if spec["initContainers"].as_array().is_some_and(|a| !a.is_empty()) {
        ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": sidecar}));
    } else {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [sidecar]}));
    }
    if app_env {
        let base = format!("http://{listen}");
        let wanted = [("OPENAI_BASE_URL", format!("{base}/v1")), ("ANTHROPIC_BASE_URL", base)];
        for (i, c) in spec["containers"].as_array().into_iter().flatten().enumerate() {
            let env = c["env"].as_array();
            let set = |name: &str| env.is_some_and(|e| e.iter().any(|v| v["name"].as_str() == Some(name)));
            let missing: Vec<Value> =
                wanted.iter().filter(|(n, _)| !set(n)).map(|(n, v)| json!({"name": n, "value": v})).collect();
            if missing.is_empty() {
                continue;
            }
            if env.is_some() {
                for m in missing {
                    ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": m}));
                }
            } else {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": missing}));
            }
        }
    }
    let status = "spillway.dev~1status";
    if !pod["metadata"].is_object() {
        ops.push(
            json!({"op": "add", "path": "/metadata", "value": {"annotations": {"spillway.dev/status": "injected"}}}),
        );
    } else if pod["metadata"]["annotations"].is_object() {
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{status}"), "value": "injected"}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {"spillway.dev/status": "injected"}}));
    }
    (ops, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["50m", "0.5", "128Mi", "1G", "2", "1.5Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "-1", "1.2.3", "12XB", ".5", "m"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
