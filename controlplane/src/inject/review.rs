//! `admission.k8s.io/v1` AdmissionReview: just the fields the injector reads and writes.
//!
//! The API server sends a review with `request` and expects the same `apiVersion` and `kind`
//! back with `response.uid` echoing `request.uid`; a mutation travels as a base64-encoded JSON
//! Patch with `patchType: JSONPatch`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub dry_run: bool,
    /// The object being admitted; a Pod for this webhook.
    #[serde(default)]
    pub object: Value,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch document, as the API requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to whoever created the pod (`kubectl` prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the object is refused (`kubectl` prints the message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl AdmissionResponse {
    /// Admits the object as it is.
    pub fn allow(uid: &str, warnings: Vec<String>) -> Self {
        AdmissionResponse { uid: uid.to_owned(), allowed: true, patch_type: None, patch: None, warnings, status: None }
    }

    /// Refuses the object, saying why.
    pub fn deny(uid: &str, message: String) -> Self {
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: false,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            status: Some(serde_json::json!({"code": 422, "reason": "Invalid", "message": message})),
        }
    }

    /// Admits the object with `ops` applied.
    pub fn patch(uid: &str, ops: &[Value], warnings: Vec<String>) -> Self {
        let json = serde_json::to_vec(ops).unwrap_or_default();
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: true,
            patch_type: Some("JSONPatch"),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(json)),
            warnings,
            status: None,
        }
    }
}
