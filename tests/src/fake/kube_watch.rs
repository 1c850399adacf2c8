//! The fake API server's `SpillwayRouting` collection, with what kube-runtime's watcher relies on:
//! list with the collection's resourceVersion, watch from a resourceVersion (every change after
//! it, then new ones as they happen, as newline-delimited JSON events), 410 Gone (an `ERROR`
//! event with a `Status` of code 410) for a version older than the retained history, replace
//! with resourceVersion preconditions (409), delete, and merge patches of the status
//! subresource. Beside it the collections listed, created and deleted the same way:
//! SpillwayDemotions (merge patches with a resourceVersion precondition), ControllerRevisions and
//! EndpointSlices.

use super::kube::{Shared, create, read, remove, replace, status, store, unauthorized};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde_json::{Value, json};
use std::collections::HashMap;

const KIND: &str = "spillwayroutings";
const BASE: &str = "/apis/spillway.dev/v1alpha1/namespaces/{ns}/spillwayroutings";

/// One write, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub version: u64,
    pub key: String,
    pub kind: &'static str,
    pub object: Value,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(BASE, get(list_or_watch).post(|s, h, p, b| create(s, h, p, b, KIND)))
        .route(
            &format!("{BASE}/{{name}}"),
            get(|s, h, p| read(s, h, p, KIND))
                .put(|s, h, p, b| replace(s, h, p, b, KIND))
                .delete(|s, h, p| delete(s, h, p, KIND)),
        )
        .route(&format!("{BASE}/{{name}}/status"), patch(patch_status))
        // SpillwayDemotions: created once, undone by a merge patch with a resourceVersion, pruned.
        .route(
            DEMOTIONS,
            get(|s, h, p, q| list(s, h, p, q, &DEMOTION)).post(|s, h, p, b| create(s, h, p, b, DEMOTION.kind)),
        )
        .route(
            &format!("{DEMOTIONS}/{{name}}"),
            get(|s, h, p| read(s, h, p, DEMOTION.kind))
                .patch(|s, h, p, b| merge_patch(s, h, p, b, DEMOTION.kind))
                .delete(|s, h, p| delete(s, h, p, DEMOTION.kind)),
        )
        // EndpointSlices, selected by `kubernetes.io/service-name`: how replicas find each other.
        .route("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", get(|s, h, p, q| list(s, h, p, q, &SLICES)))
        // ControllerRevisions: the config history (created once, listed, deleted).
        .route(
            REVISIONS,
            get(|s, h, p, q| list(s, h, p, q, &HISTORY)).post(|s, h, p, b| create(s, h, p, b, HISTORY.kind)),
        )
        .route(
            &format!("{REVISIONS}/{{name}}"),
            get(|s, h, p| read(s, h, p, HISTORY.kind)).delete(|s, h, p| delete(s, h, p, HISTORY.kind)),
        )
}

/// A collection as its list is answered.
struct Collection {
    /// The plural, as objects are keyed in the store.
    kind: &'static str,
    api_version: &'static str,
    list_kind: &'static str,
}

const ROUTINGS: Collection =
    Collection { kind: KIND, api_version: "spillway.dev/v1alpha1", list_kind: "SpillwayRoutingList" };
const HISTORY: Collection =
    Collection { kind: "controllerrevisions", api_version: "apps/v1", list_kind: "ControllerRevisionList" };
const SLICES: Collection =
    Collection { kind: "endpointslices", api_version: "discovery.k8s.io/v1", list_kind: "EndpointSliceList" };

const DEMOTION: Collection =
    Collection { kind: "spillwaydemotions", api_version: "spillway.dev/v1alpha1", list_kind: "SpillwayDemotionList" };
const DEMOTIONS: &str = "/apis/spillway.dev/v1alpha1/namespaces/{ns}/spillwaydemotions";

const REVISIONS: &str = "/apis/apps/v1/namespaces/{ns}/controllerrevisions";

/// The collection's objects in the namespace, with the collection's resourceVersion; a
/// `key=value` label selector (the only form the control plane uses) filters them.
async fn list(
    State(api): State<Shared>,
    h: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    c: &Collection,
) -> Response {
    if let Some(denied) = unauthorized(&h) {
        return denied.into_response();
    }
    let api = api.lock().unwrap();
    let mut items = api.objects_under(&format!("{}/{ns}/", c.kind));
    if let Some((k, v)) = q.get("labelSelector").and_then(|s| s.split_once('=')) {
        items.retain(|o| o["metadata"]["labels"][k] == v);
    }
    let list = json!({"apiVersion": c.api_version, "kind": c.list_kind,
                      "metadata": {"resourceVersion": api.version().to_string()}, "items": items});
    (StatusCode::OK, axum::Json(list)).into_response()
}

async fn list_or_watch(
    State(api): State<Shared>,
    h: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        if let Some(denied) = unauthorized(&h) {
            return denied.into_response();
        }
        let from = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        return watch(api, format!("{KIND}/{ns}/"), from);
    }
    list(State(api), h, Path(ns), Query(q), &ROUTINGS).await
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// Every change under `prefix` after `from`, then each new one, until the client goes away.
fn watch(api: Shared, prefix: String, from: u64) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let changed = api.lock().unwrap().changed.clone();
    tokio::spawn(async move {
        let mut cursor = from;
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, gone) = {
                let api = api.lock().unwrap();
                let gone = cursor < api.compacted;
                let batch: Vec<Event> =
                    api.events.iter().filter(|e| e.version > cursor && e.key.starts_with(&prefix)).cloned().collect();
                (batch, gone)
            };
            if gone {
                let expired = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {cursor}")}});
                let _ = tx.send(Ok(line(&expired))).await;
                return;
            }
            for e in batch {
                cursor = e.version;
                if tx.send(Ok(line(&json!({"type": e.kind, "object": e.object})))).await.is_err() {
                    return;
                }
            }
            let compacted = api.lock().unwrap().compacted;
            notified.await;
            // Compacted meanwhile: end the stream; the client resumes and gets 410 Gone.
            if tx.is_closed() || api.lock().unwrap().compacted != compacted {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder().header("content-type", "application/json").body(body).unwrap_or_default()
}

async fn delete(
    State(api): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    kind: &str,
) -> Response {
    if let Some(denied) = unauthorized(&h) {
        return denied.into_response();
    }
    match remove(&mut api.lock().unwrap(), &format!("{kind}/{ns}/{name}")) {
        Some(o) => (StatusCode::OK, axum::Json(o)).into_response(),
        None => status(StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// A JSON merge patch of an object; a `metadata.resourceVersion` in the patch is a precondition
/// (409 when the object has moved on), as the API server treats it.
pub(super) async fn merge_patch(
    State(api): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
    kind: &str,
) -> Response {
    if let Some(denied) = unauthorized(&h) {
        return denied.into_response();
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/merge-patch+json") {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "only merge patches here").into_response();
    }
    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = format!("{kind}/{ns}/{name}");
    let mut api = api.lock().unwrap();
    let Some(mut object) = api.object(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "not found").into_response();
    };
    let precondition = &patch["metadata"]["resourceVersion"];
    if !precondition.is_null() && *precondition != object["metadata"]["resourceVersion"] {
        return status(StatusCode::CONFLICT, "the object has been modified").into_response();
    }
    json_patch::merge(&mut object, &patch);
    (StatusCode::OK, axum::Json(store(&mut api, key, object))).into_response()
}

/// A merge patch of `.status` (what the control plane writes conditions with).
async fn patch_status(
    State(api): State<Shared>,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&h) {
        return denied.into_response();
    }
    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = format!("{KIND}/{ns}/{name}");
    let mut api = api.lock().unwrap();
    let Some(mut object) = api.object(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "not found").into_response();
    };
    json_patch::merge(&mut object["status"], &patch["status"]);
    (StatusCode::OK, axum::Json(store(&mut api, key, object))).into_response()
}
