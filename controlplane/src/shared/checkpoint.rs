//! The leader's checkpoint of fleet-wide opens and feedback baselines: one document — a
//! ConfigMap, or an etcd key — that only the leader writes, with preconditions on its version
//! (`resourceVersion`, `mod_revision`), and that every follower reads to resume from if it takes
//! over.

use crate::kube::{self, Kube};
use crate::state::{ConfigState, Demotion};
use crate::telemetry::Telemetry;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Where demotions were kept before they were objects of their own: handed over once.
const LEGACY_DEMOTIONS: &str = "demotions.json";
/// The leader's checkpoint.
const LEADER_KEY: &str = "leader.json";

/// Where the shared document is kept.
pub enum SharedDoc {
    ConfigMap { kube: Arc<Kube>, namespace: String, name: String },
    Etcd(crate::etcd::Etcd),
}

/// The etcd key, under the store's prefix.
const ETCD_KEY: &str = "shared";

impl SharedDoc {
    pub fn describe(&self) -> String {
        match self {
            SharedDoc::ConfigMap { namespace, name, .. } => format!("configmap {namespace}/{name}"),
            SharedDoc::Etcd(e) => format!("etcd {}", e.key(ETCD_KEY)),
        }
    }

    /// The document and the version to write against ("" when it does not exist).
    async fn get(&self) -> Result<(Map<String, Value>, String), String> {
        match self {
            SharedDoc::ConfigMap { kube, namespace, name } => {
                Ok(kube::get_configmap(kube, namespace, name).await?.unwrap_or_default())
            }
            SharedDoc::Etcd(e) => e.get_doc(ETCD_KEY).await,
        }
    }

    /// `Ok(false)` when someone wrote since `version`.
    async fn put(&self, data: &Map<String, Value>, version: &str) -> Result<bool, String> {
        match self {
            SharedDoc::ConfigMap { kube, namespace, name } => {
                kube::write_configmap(kube, namespace, name, data, version).await
            }
            SharedDoc::Etcd(e) => e.put_doc(ETCD_KEY, data, version).await,
        }
    }
}

/// One round: the leader writes its checkpoint, a follower takes the latest.
pub async fn round(doc: &SharedDoc, state: &ConfigState, telemetry: Option<&Telemetry>) -> Result<(), String> {
    let (mut data, version) = doc.get().await?;
    let mut write = false;
    if let Some(legacy) = data.remove(LEGACY_DEMOTIONS) {
        let list: Vec<Demotion> = match legacy.as_str() {
            Some(text) if !text.is_empty() => {
                serde_json::from_str(text).map_err(|e| format!("{LEGACY_DEMOTIONS} is not a demotion list: {e}"))?
            }
            _ => Vec::new(),
        };
        // They become objects with this replica's next demotion round.
        state.set_demotions(super::demotions::merge(&list, &state.demotions()), "shared");
        write = true;
    }
    if let Some(t) = telemetry {
        if t.leading().is_some() {
            let checkpoint = serde_json::to_string(&t.checkpoint()).map_err(|e| e.to_string())?;
            data.insert(LEADER_KEY.into(), checkpoint.into());
            write = true;
        } else if let Some(c) = data.get(LEADER_KEY).and_then(|v| v.as_str()) {
            match serde_json::from_str(c) {
                Ok(c) => t.observe_checkpoint(c),
                Err(e) => tracing::warn!(error = %e, "the leader's checkpoint does not parse"),
            }
        }
    }
    // A lost race is retried on the next round: the checkpoint is rewritten every round anyway.
    if write {
        doc.put(&data, &version).await?;
    }
    Ok(())
}
