//! Admission checks of `SpillwayRouting` objects (`POST /validate-routing` on the injector's
//! HTTPS server, a ValidatingWebhookConfiguration in the chart): `kubectl apply` of an object the
//! control plane could not merge is refused at once with every problem and its path, instead of
//! being stored and only reported in its status. A spec must parse as a routing file (the CRD's
//! schema already checks types; this checks what a schema cannot), and merged with the
//! namespace's other objects it must bring no problem of its own. Deletions are always admitted.

use crate::crd_source::CrdConfig;
use crate::inject::review::{AdmissionResponse, AdmissionReview, ReviewResponse};
use serde_json::Value;

/// The answer to one AdmissionReview; `objects` are the namespace's objects as this replica
/// sees them (without them only the object itself is checked).
pub fn review(body: &[u8], objects: Option<&CrdConfig>) -> Result<ReviewResponse, String> {
    let review: AdmissionReview = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request = review.request.ok_or("an AdmissionReview without a request")?;
    let response = match request.operation.as_str() {
        "CREATE" | "UPDATE" => check(&request.uid, &request.object, objects),
        _ => AdmissionResponse::allow(&request.uid, Vec::new()),
    };
    Ok(ReviewResponse { api_version: review.api_version, kind: review.kind, response })
}

fn check(uid: &str, object: &Value, objects: Option<&CrdConfig>) -> AdmissionResponse {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let shown = format!("SpillwayRouting/{name}");
    let spec = object.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
    let parsed = spillway_api::config::parse_str(&spec.to_string(), &shown);
    let result = parsed.and_then(|config| match objects {
        Some(o) => o.check_with(name, config),
        None => Ok(()),
    });
    match result {
        Ok(()) => AdmissionResponse::allow(uid, Vec::new()),
        Err(errors) => {
            AdmissionResponse::deny(uid, format!("{shown} cannot be merged into the routing config: {errors}"))
        }
    }
}
