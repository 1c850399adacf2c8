//! The admin HTTP API (axum): read, validate (dry run), replace and roll back the routing
//! config, see the change history and each sidecar's status.
//!
//! Every call needs a JWT (jsonwebtoken; HS256 secret or RS256 public key) whose `role` (or one
//! of `roles`) is `viewer` for reads and `editor` for writes; an editor may also read. Every
//! change is recorded with who (`sub`), when, and a diff. An invalid config is refused with each
//! problem's path and never published.

use crate::ads::Discovery;
use crate::snapshot::Snapshot;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use spillway_api::config::{RoutingConfig, load_str};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Role {
    Viewer,
    Editor,
}

/// How tokens are verified.
pub struct AdminAuth {
    key: DecodingKey,
    validation: Validation,
}

impl AdminAuth {
    pub fn hs256(secret: &[u8]) -> Self {
        AdminAuth { key: DecodingKey::from_secret(secret), validation: Validation::new(Algorithm::HS256) }
    }

    pub fn rs256_pem(public_pem: &[u8]) -> Result<Self, String> {
        let key = DecodingKey::from_rsa_pem(public_pem).map_err(|e| format!("not an RSA public key: {e}"))?;
        Ok(AdminAuth { key, validation: Validation::new(Algorithm::RS256) })
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Clone, serde::Serialize)]
pub struct Change {
    pub version: String,
    pub previous: Option<String>,
    pub who: String,
    pub at_unix_ms: u64,
    pub action: &'static str,
    pub diff: String,
}

pub struct Admin {
    discovery: Arc<Discovery>,
    auth: AdminAuth,
    history: Mutex<Vec<Change>>,
    /// Every snapshot published through or seen by the admin API, for rollback.
    known: Mutex<HashMap<String, Arc<Snapshot>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn pretty(s: &Snapshot) -> String {
    serde_json::from_slice::<Value>(&s.config_json).and_then(|v| serde_json::to_string_pretty(&v)).unwrap_or_default()
}

impl Admin {
    pub fn new(discovery: Arc<Discovery>, auth: AdminAuth) -> Arc<Admin> {
        let known = discovery.current().map(|s| (s.version.clone(), s)).into_iter().collect();
        Arc::new(Admin { discovery, auth, history: Mutex::new(Vec::new()), known: Mutex::new(known) })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/config", get(read).put(replace))
            .route("/v1/config/validate", post(validate))
            .route("/v1/config/rollback/{version}", post(rollback))
            .route("/v1/history", get(history))
            .route("/v1/nodes", get(nodes))
            .with_state(self)
    }

    /// The caller's name if its token grants `need`; otherwise the response to send.
    fn authorize(&self, headers: &HeaderMap, need: Role) -> Result<String, Box<Response>> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Box::new(err(StatusCode::UNAUTHORIZED, "missing bearer token")))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.auth.key, &self.auth.validation)
            .map_err(|e| Box::new(err(StatusCode::UNAUTHORIZED, format!("invalid token: {e}"))))?;
        let c = data.claims;
        let granted = c
            .role
            .iter()
            .chain(c.roles.iter())
            .filter_map(|r| match r.as_str() {
                "editor" => Some(Role::Editor),
                "viewer" => Some(Role::Viewer),
                _ => None,
            })
            .max();
        match granted {
            Some(r) if r >= need => Ok(c.sub),
            _ => Err(Box::new(err(
                StatusCode::FORBIDDEN,
                format!("role {} required", if need == Role::Editor { "editor" } else { "viewer" }),
            ))),
        }
    }

    fn publish(&self, s: Arc<Snapshot>, who: String, action: &'static str) -> Change {
        let previous = self.discovery.current();
        let diff = similar::TextDiff::from_lines(&previous.as_deref().map(pretty).unwrap_or_default(), &pretty(&s))
            .unified_diff()
            .header("before", "after")
            .to_string();
        let change = Change {
            version: s.version.clone(),
            previous: previous.map(|p| p.version.clone()),
            who,
            at_unix_ms: now_ms(),
            action,
            diff,
        };
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(s.version.clone(), s.clone());
        self.discovery.publish(s);
        self.history.lock().unwrap_or_else(|p| p.into_inner()).push(change.clone());
        tracing::info!(version = %change.version, who = %change.who, action, "routing config changed through the admin API");
        change
    }
}

fn checked(text: &str) -> Result<(RoutingConfig, Arc<Snapshot>), Box<Response>> {
    let problems = |e: spillway_api::config::ConfigErrors| {
        let list: Vec<Value> =
            e.0.iter().map(|p| json!({"file": p.file, "path": p.path, "message": p.message})).collect();
        Box::new(
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"valid": false, "errors": list}))).into_response(),
        )
    };
    let config = load_str(text, "<admin>").map_err(problems)?;
    let snapshot = Snapshot::build(&config).map_err(problems)?;
    Ok((config, snapshot))
}

async fn read(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    match a.discovery.current() {
        Some(s) => {
            let config: Value = serde_json::from_slice(&s.config_json).unwrap_or_default();
            axum::Json(json!({"version": s.version, "config": config})).into_response()
        }
        None => err(StatusCode::NOT_FOUND, "no config yet"),
    }
}

async fn validate(State(a): State<Arc<Admin>>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    match checked(&body) {
        Ok((_, s)) => axum::Json(json!({"valid": true, "version": s.version})).into_response(),
        Err(r) => *r,
    }
}

async fn replace(State(a): State<Arc<Admin>>, headers: HeaderMap, body: String) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    match checked(&body) {
        Ok((_, s)) => axum::Json(json!(a.publish(s, who, "replace"))).into_response(),
        Err(r) => *r,
    }
}

async fn rollback(State(a): State<Arc<Admin>>, headers: HeaderMap, Path(version): Path<String>) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let known = a.known.lock().unwrap_or_else(|p| p.into_inner()).get(&version).cloned();
    match known {
        Some(s) => axum::Json(json!(a.publish(s, who, "rollback"))).into_response(),
        None => err(StatusCode::NOT_FOUND, format!("no known version {version}")),
    }
}

async fn history(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    let h = a.history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    axum::Json(json!({"changes": h})).into_response()
}

async fn nodes(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    axum::Json(json!({"nodes": a.discovery.nodes()})).into_response()
}
