//! The admin HTTP API (axum): read, validate (dry run), replace and roll back the routing
//! config, see the change history and each sidecar's status.
//!
//! Every call needs a JWT (jsonwebtoken; HS256 secret or RS256 public key) whose `role` (or one
//! of `roles`) is `viewer` for reads and `editor` for writes; an editor may also read. Every
//! change is recorded with who (`sub`), when, and a diff. An invalid config is refused with each
//! problem's path and never published.

use crate::ads::Discovery;
use crate::crd_source::{CrdConfig, CrdWriteError};
use crate::etcd::config::{EtcdConfig, WriteError, Written};
use crate::forward::ToLeader;
use crate::snapshot::Snapshot;
use crate::state::{Change, ConfigState};
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use spillway_api::config::{RoutingConfig, load_str};
use std::sync::Arc;

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

/// The shortest HS256 secret accepted: a key as long as the hash (RFC 7518 §3.2). An empty or
/// short secret file would let anyone who guesses it sign an editor token.
pub const MIN_HS256_SECRET: usize = 32;

impl AdminAuth {
    /// Verifies tokens signed with `secret` (surrounding whitespace is not part of it).
    pub fn hs256(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_HS256_SECRET {
            return Err(format!(
                "the HS256 secret is {} bytes; at least {MIN_HS256_SECRET} are required (RFC 7518 §3.2)",
                secret.len()
            ));
        }
        Ok(AdminAuth { key: DecodingKey::from_secret(secret), validation: validation(Algorithm::HS256) })
    }

    pub fn rs256_pem(public_pem: &[u8]) -> Result<Self, String> {
        let key = DecodingKey::from_rsa_pem(public_pem).map_err(|e| format!("not an RSA public key: {e}"))?;
        Ok(AdminAuth { key, validation: validation(Algorithm::RS256) })
    }
}

/// `exp` required and checked, `nbf` checked when present, one algorithm only.
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_nbf = true;
    v
}

/// A token whose header names critical extensions must be refused by anyone who does not
/// implement them (RFC 7515 §4.1.11), and we implement none. jsonwebtoken's `Header` has no
/// `crit` field and would silently ignore it, so the header is read here first.
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else { return false };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else { return false };
    serde_json::from_slice::<serde_json::Map<String, Value>>(&json).is_ok_and(|h| h.contains_key("crit"))
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

pub struct Admin {
    discovery: Arc<Discovery>,
    state: Arc<ConfigState>,
    telemetry: Arc<Telemetry>,
    auth: AdminAuth,
    /// With several replicas: where the leader's views are.
    leader: Option<ToLeader>,
    /// The shared store the config is written through to, when one owns it.
    store: std::sync::OnceLock<Arc<EtcdConfig>>,
    /// The other live replicas, whose sidecars `/v1/nodes` and the rollout include.
    peers: std::sync::OnceLock<crate::forward::Peers>,
    /// The SpillwayRouting objects the config is written through to, when they own it.
    crd: std::sync::OnceLock<Arc<CrdConfig>>,
}

/// `?scope=replica`: this replica's own share only (what a peer asks when it gathers).
#[derive(serde::Deserialize, Default)]
struct Scope {
    scope: Option<ScopeKind>,
}

#[derive(serde::Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ScopeKind {
    Replica,
}

type ScopeQuery = Result<Query<Scope>, axum::extract::rejection::QueryRejection>;

/// The scope asked for, or a 400 in the admin API's JSON form naming what is accepted.
fn scope_of(q: ScopeQuery) -> Result<Scope, Box<Response>> {
    q.map(|Query(s)| s)
        .map_err(|e| Box::new(err(StatusCode::BAD_REQUEST, format!("{}; scope may only be `replica`", e.body_text()))))
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

impl Admin {
    pub fn new(
        discovery: Arc<Discovery>,
        state: Arc<ConfigState>,
        telemetry: Arc<Telemetry>,
        auth: AdminAuth,
    ) -> Arc<Admin> {
        Self::build(discovery, state, telemetry, auth, None)
    }

    /// An admin API on one of several replicas: calls only the leader can answer go to it.
    pub fn replica(
        discovery: Arc<Discovery>,
        state: Arc<ConfigState>,
        telemetry: Arc<Telemetry>,
        auth: AdminAuth,
        leader_url: tokio::sync::watch::Receiver<Option<crate::election::Advertised>>,
    ) -> Arc<Admin> {
        Self::build(discovery, state, telemetry, auth, Some(ToLeader::new(leader_url)))
    }

    fn build(
        discovery: Arc<Discovery>,
        state: Arc<ConfigState>,
        telemetry: Arc<Telemetry>,
        auth: AdminAuth,
        leader: Option<ToLeader>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            discovery,
            state,
            telemetry,
            auth,
            leader,
            store: Default::default(),
            peers: Default::default(),
            crd: Default::default(),
        })
    }

    /// Writes (replace, rollback) go through `store`, which every replica follows.
    pub fn write_through(&self, store: Arc<EtcdConfig>) {
        let _ = self.store.set(store);
    }

    /// Writes (replace, rollback) go to the admin API's own SpillwayRouting object.
    pub fn write_through_crd(&self, crd: Arc<CrdConfig>) {
        let _ = self.crd.set(crd);
    }

    /// `/v1/nodes` and the rollout gather every live replica's share from `peers`.
    pub fn merge_views(&self, peers: crate::forward::Peers) {
        let _ = self.peers.set(peers);
    }

    /// The peers to gather from, unless the caller asked for this replica's share only.
    fn gathering(&self, scope: &Scope) -> Option<&crate::forward::Peers> {
        self.peers.get().filter(|_| scope.scope != Some(ScopeKind::Replica))
    }

    /// The leader's answer when this replica does not lead; `None` when it does (or is alone).
    async fn at_leader(&self, method: axum::http::Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        if self.telemetry.leading().is_some() {
            return None;
        }
        Some(match &self.leader {
            Some(l) => l.forward(method, path, headers).await,
            None => err(StatusCode::SERVICE_UNAVAILABLE, "this control plane does not lead"),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/config", get(read).put(replace))
            .route("/v1/config/validate", post(validate))
            .route("/v1/config/rollback/{version}", post(rollback))
            .route("/v1/history", get(history))
            .route("/v1/nodes", get(nodes))
            .route("/v1/fleet", get(fleet))
            .route("/v1/fleet/release/{endpoint}", post(release))
            .route("/v1/feedback", get(feedback))
            .route("/v1/demotions/{id}/undo", post(undo))
            .with_state(self)
    }

    /// The caller's name if its token grants `need`; otherwise the response to send.
    fn authorize(&self, headers: &HeaderMap, need: Role) -> Result<String, Box<Response>> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Box::new(err(StatusCode::UNAUTHORIZED, "missing bearer token")))?;
        if names_critical_extensions(token) {
            return Err(Box::new(err(
                StatusCode::UNAUTHORIZED,
                "invalid token: critical header extensions (crit) are not supported",
            )));
        }
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
}

/// What a write answers: the change, or that the config was already so.
fn changed(c: Option<Change>) -> Response {
    match c {
        Some(c) => axum::Json(json!(c)).into_response(),
        None => axum::Json(json!({"unchanged": true})).into_response(),
    }
}

fn problems(e: spillway_api::config::ConfigErrors) -> Response {
    let list: Vec<Value> = e.0.iter().map(|p| json!({"file": p.file, "path": p.path, "message": p.message})).collect();
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"valid": false, "errors": list}))).into_response()
}

fn check(text: &str) -> Result<(RoutingConfig, Arc<Snapshot>), spillway_api::config::ConfigErrors> {
    let config = load_str(text, "<admin>")?;
    let snapshot = Snapshot::build(&config)?;
    Ok((config, snapshot))
}

async fn read(State(a): State<Arc<Admin>>, headers: HeaderMap, scope: ScopeQuery) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    let scope = match scope_of(scope) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match a.discovery.current() {
        Some(s) => {
            let config: Value = serde_json::from_slice(&s.config_json).unwrap_or_default();
            let mut rollout = json!(a.discovery.rollout(&s.version));
            if let Some(peers) = a.gathering(&scope) {
                let mine = json!({"version": s.version, "sidecars": rollout});
                match peers.gather("/v1/config?scope=replica", &headers, mine).await {
                    Ok(all) => rollout = merge_rollouts(&s.version, &all),
                    Err(e) => rollout["error"] = json!(format!("only this replica's sidecars: {e}")),
                }
            }
            let mut body = json!({"version": s.version, "config": config, "sidecars": rollout});
            match a.store.get() {
                // The revision an edit is based on: send it back as If-Match.
                Some(store) => {
                    let revision = store.revision();
                    body["revision"] = json!(revision);
                    ([(axum::http::header::ETAG, format!("\"{revision}\""))], axum::Json(body)).into_response()
                }
                None => match a.crd.get().and_then(|c| c.revision()) {
                    Some(rv) => {
                        body["generation"] = json!(rv);
                        ([(axum::http::header::ETAG, format!("\"{rv}\""))], axum::Json(body)).into_response()
                    }
                    None => axum::Json(body).into_response(),
                },
            }
        }
        None => err(StatusCode::NOT_FOUND, "no config yet"),
    }
}

async fn validate(State(a): State<Arc<Admin>>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    match check(&body) {
        Ok((_, s)) => axum::Json(json!({"valid": true, "version": s.version})).into_response(),
        Err(e) => problems(e),
    }
}

/// A write through the API, refused while a watched directory owns the config, or while several
/// replicas each hold their own copy of a file.
fn owned_elsewhere(a: &Admin) -> Option<Response> {
    match a.state.owner() {
        crate::state::Owner::Admin | crate::state::Owner::Store(_) => None,
        crate::state::Owner::Directory(dir) => Some(err(
            StatusCode::CONFLICT,
            format!(
                "the routing config is owned by the watched directory {}: edit the files there (a change made here would be overwritten by the next file change)",
                dir.display()
            ),
        )),
        crate::state::Owner::ReplicatedFile(file) => Some(err(
            StatusCode::CONFLICT,
            format!(
                "the routing config is the file {} on each of several replicas: a change made here would reach only this one and be lost at its restart; edit the file (or its ConfigMap), or keep the config in etcd (--etcd-endpoints)",
                file.display()
            ),
        )),
    }
}

async fn replace(State(a): State<Arc<Admin>>, headers: HeaderMap, body: String) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if let Some(refused) = owned_elsewhere(&a) {
        return refused;
    }
    let action = action("replace", &headers);
    let config = match check(&body) {
        Ok((config, _)) => config,
        Err(e) => return problems(e),
    };
    if let Some(store) = a.store.get() {
        let expected = match if_match(&headers) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        return written(store.write(config, &who, &action, expected).await);
    }
    if let Some(crd) = a.crd.get() {
        return crd_written(crd.write(config, &who, &action, if_match_raw(&headers)).await);
    }
    match a.state.set_base(config, &who, &action) {
        Ok(c) => changed(c),
        Err(e) => problems(e),
    }
}

/// The action recorded in the history: the operation, and the editor's reason when the request
/// gives one (`x-spillway-reason`).
fn action(op: &str, headers: &HeaderMap) -> String {
    match headers.get("x-spillway-reason").and_then(|v| v.to_str().ok()).map(str::trim) {
        Some(why) if !why.is_empty() => format!("{op}: {}", why.chars().take(500).collect::<String>()),
        _ => op.to_owned(),
    }
}

/// `If-Match` as given (a Kubernetes resourceVersion is opaque), unquoted.
fn if_match_raw(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(axum::http::header::IF_MATCH)?.to_str().ok()?;
    Some(v.trim().trim_start_matches("W/").trim_matches('"').to_owned())
}

/// What a write to the admin API's SpillwayRouting object answers. The watch publishes it on
/// every replica, this one included.
fn crd_written(r: Result<String, CrdWriteError>) -> Response {
    match r {
        Ok(generation) => axum::Json(json!({"written": format!("SpillwayRouting/{}", crate::crd_source::ADMIN_OBJECT), "generation": generation}))
            .into_response(),
        Err(e @ (CrdWriteError::Conflict(_) | CrdWriteError::OwnedElsewhere(_))) => err(StatusCode::CONFLICT, e.to_string()),
        Err(CrdWriteError::Invalid(e)) => problems(e),
        Err(e @ CrdWriteError::Api(_)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The revision an edit was based on, from `If-Match` (a revision, quoted or not).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Box<Response>> {
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else { return Ok(None) };
    let text = v.to_str().unwrap_or_default().trim().trim_start_matches("W/").trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        Box::new(err(
            StatusCode::BAD_REQUEST,
            format!("If-Match must be the config revision from GET /v1/config (its ETag), not {text:?}"),
        ))
    })
}

/// What a write through the store answers.
fn written(r: Result<Written, WriteError>) -> Response {
    match r {
        Ok(w) => axum::Json(json!(w)).into_response(),
        Err(WriteError::Conflict { current, .. }) => {
            let message = r.err().map(|e| e.to_string()).unwrap_or_default();
            (StatusCode::CONFLICT, axum::Json(json!({"error": message, "revision": current}))).into_response()
        }
        Err(WriteError::Invalid(e)) => problems(e),
        Err(e @ WriteError::UnknownVersion(_)) => err(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ WriteError::Store(_)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn rollback(State(a): State<Arc<Admin>>, headers: HeaderMap, Path(version): Path<String>) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if let Some(refused) = owned_elsewhere(&a) {
        return refused;
    }
    if let Some(store) = a.store.get() {
        let expected = match if_match(&headers) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        return written(store.rollback(&version, &who, expected).await);
    }
    if let Some(crd) = a.crd.get() {
        let recorded = match crd.history().config(&version).await {
            Ok(c) => c,
            Err(e) => return err(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        let Some(base) = recorded.or_else(|| a.state.base_of(&version)) else {
            return err(StatusCode::NOT_FOUND, format!("no known version {version}"));
        };
        let action = format!("rollback to {version}");
        return crd_written(crd.write(base, &who, &action, if_match_raw(&headers)).await);
    }
    match a.state.rollback(&version, &who) {
        Ok(c) => changed(c),
        Err(e) => err(StatusCode::NOT_FOUND, e),
    }
}

async fn history(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    match a.store.get() {
        Some(store) => match store.history(false).await {
            Ok(changes) => axum::Json(json!({"changes": changes})).into_response(),
            Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        None => match a.crd.get() {
            Some(crd) => match crd.history().entries().await {
                Ok(changes) => axum::Json(json!({"changes": changes})).into_response(),
                Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            None => axum::Json(json!({"changes": a.state.history()})).into_response(),
        },
    }
}

async fn nodes(State(a): State<Arc<Admin>>, headers: HeaderMap, scope: ScopeQuery) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    let scope = match scope_of(scope) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mine = json!({"nodes": a.discovery.nodes()});
    let Some(peers) = a.gathering(&scope) else { return axum::Json(mine).into_response() };
    match peers.gather("/v1/nodes?scope=replica", &headers, mine).await {
        Ok(all) => axum::Json(merge_nodes(&all)).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, format!("cannot list the replicas: {e}")),
    }
}

type Gathered = [(String, Result<Value, String>)];

/// Every replica's sidecars as one map, each marked with its replica; a sidecar known to two
/// (it moved) is shown where it is connected. Replicas that did not answer are named.
fn merge_nodes(all: &Gathered) -> Value {
    let mut nodes = serde_json::Map::new();
    let mut replicas = Vec::new();
    for (name, answer) in all {
        match answer {
            Ok(v) => {
                let theirs = v["nodes"].as_object().cloned().unwrap_or_default();
                replicas.push(json!({"replica": name, "nodes": theirs.len()}));
                for (id, mut status) in theirs {
                    status["replica"] = json!(name);
                    let keep =
                        nodes.get(&id).is_some_and(|n: &Value| n["connected"] == true && status["connected"] != true);
                    if !keep {
                        nodes.insert(id, status);
                    }
                }
            }
            Err(e) => replicas.push(json!({"replica": name, "error": e})),
        }
    }
    json!({"nodes": nodes, "replicas": replicas})
}

/// The rollout of `version` over every replica's connected sidecars; those of a replica still
/// serving another version count as on another version.
fn merge_rollouts(version: &str, all: &Gathered) -> Value {
    let (mut acked, mut nacked, mut other) = (0, 0, 0);
    let mut unanswered = Vec::new();
    for (name, answer) in all {
        let Ok(v) = answer else {
            unanswered.push(json!(name));
            continue;
        };
        let n = |k: &str| v["sidecars"][k].as_u64().unwrap_or(0);
        if v["version"] == version {
            (acked, nacked, other) = (acked + n("acked"), nacked + n("nacked"), other + n("other_version"));
        } else {
            other += n("acked") + n("nacked") + n("other_version");
        }
    }
    let mut r = json!({"acked": acked, "nacked": nacked, "other_version": other});
    if !unanswered.is_empty() {
        r["replicas_not_answering"] = json!(unanswered);
    }
    r
}

async fn fleet(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    if let Some(r) = a.at_leader(axum::http::Method::GET, "/v1/fleet", &headers).await {
        return r;
    }
    axum::Json(a.telemetry.view()).into_response()
}

async fn release(State(a): State<Arc<Admin>>, headers: HeaderMap, Path(endpoint): Path<String>) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let path = format!("/v1/fleet/release/{endpoint}");
    if let Some(r) = a.at_leader(axum::http::Method::POST, &path, &headers).await {
        return r;
    }
    if a.telemetry.release(&endpoint) {
        tracing::info!(endpoint, who, "fleet-wide open released");
        axum::Json(json!({"released": endpoint, "who": who})).into_response()
    } else {
        err(StatusCode::NOT_FOUND, format!("endpoint {endpoint} is not open fleet-wide"))
    }
}

async fn feedback(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = a.authorize(&headers, Role::Viewer) {
        return *r;
    }
    if let Some(r) = a.at_leader(axum::http::Method::GET, "/v1/feedback", &headers).await {
        return r;
    }
    axum::Json(a.telemetry.feedback_view()).into_response()
}

async fn undo(State(a): State<Arc<Admin>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let who = match a.authorize(&headers, Role::Editor) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    match a.telemetry.undo_demotion(id, &who) {
        Ok(d) => axum::Json(json!(d)).into_response(),
        Err(e) => err(StatusCode::NOT_FOUND, e),
    }
}
