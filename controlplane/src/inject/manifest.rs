//! Manual injection, like `istioctl kube-inject`: `spillway-control inject -f app.yaml` adds the
//! sidecar to every pod template in a YAML stream, for clusters without the webhook and for
//! reviewing what the webhook would do. The same [`plan`](super::plan) decides; the
//! `json-patch` crate applies it.

use super::{InjectOptions, plan};
use serde_json::{Value, json};

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod template in `yaml` (one or more documents); returns the YAML and the
/// warnings, each naming its object. Other objects pass through unchanged.
pub fn inject(opts: &InjectOptions, yaml: &str) -> Result<(String, Vec<String>), String> {
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| format!("not Kubernetes YAML: {e}"))?;
    docs.retain(|d| !d.is_null());
    let mut warnings = Vec::new();
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap_or("<unnamed>"));
        let Some(path) = template_path(&kind) else { continue };
        let mut target = &mut *doc;
        for key in path {
            target = &mut target[*key];
        }
        // The webhook sees a Pod; a template has the same metadata and spec.
        let mut pod =
            json!({"metadata": target.get("metadata").cloned().unwrap_or(json!({})), "spec": target["spec"].clone()});
        let (ops, w) = plan(opts, &pod);
        warnings.extend(w.into_iter().map(|w| format!("{name}: {w}")));
        if ops.is_empty() {
            continue;
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).map_err(|e| e.to_string())?;
        json_patch::patch(&mut pod, &patch).map_err(|e| format!("{name}: cannot apply the injection: {e}"))?;
        target["metadata"] = pod["metadata"].take();
        target["spec"] = pod["spec"].take();
    }
    let out = serde_saphyr::to_string_multiple(&docs).map_err(|e| format!("cannot write YAML: {e}"))?;
    Ok((out, warnings))
}
