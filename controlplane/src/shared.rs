//! What the control plane's replicas must agree on beyond the config every one of them watches:
//! the feedback demotions. The leader makes them (it alone sees all the feedback); an editor may
//! undo one through any replica; every replica must serve snapshots with the same ones applied,
//! and a restart must not forget them.
//!
//! They live in one document — a ConfigMap, or an etcd key — written only with preconditions on
//! its version (`resourceVersion`, `mod_revision`). Each replica
//! merges what it has with what is stored — by id; an undo is final, whichever side has it — and
//! writes back if the store lacks something, or takes what the store adds. New ids are never
//! reused: a new demotion takes the next id after every one the replica has seen.

use crate::kube::{self, Kube};
use crate::state::{ConfigState, Demotion};
use crate::telemetry::Telemetry;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::time::Duration;

const KEY: &str = "demotions.json";
/// The leader's checkpoint of fleet-wide opens and feedback baselines.
const LEADER_KEY: &str = "leader.json";

/// Where the shared document is kept.
pub enum SharedDoc {
    ConfigMap { kube: Arc<Kube>, namespace: String, name: String },
    Etcd(crate::etcd::Etcd),
}

/// The etcd key, under the store's prefix.
const ETCD_KEY: &str = "shared";

impl SharedDoc {
    fn describe(&self) -> String {
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

/// `ours` and `stored` as one list: every demotion either side knows, undone if either undid it.
pub fn merge(stored: &[Demotion], ours: &[Demotion]) -> Vec<Demotion> {
    let mut out: Vec<Demotion> = stored.to_vec();
    for d in ours {
        match out.iter_mut().find(|s| s.id == d.id) {
            Some(s) if !d.active && s.active => {
                s.active = false;
                s.undone_by.clone_from(&d.undone_by);
            }
            Some(_) => {}
            None => out.push(d.clone()),
        }
    }
    out.sort_by_key(|d| d.id);
    out
}

/// The same demotions, ignoring `applies` (each replica settles that against its own base).
fn same(a: &[Demotion], b: &[Demotion]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Demotion { applies: y.applies, ..x.clone() } == *y)
}

/// Keeps this replica's demotions and the shared document in step, until dropped:
/// at once when a demotion is made or undone here, and every `every` to take others' changes.
///
/// With `telemetry`, the leader also writes its checkpoint there each round, and a follower keeps
/// the latest one to resume from if it takes over.
pub async fn run(doc: SharedDoc, state: Arc<ConfigState>, telemetry: Option<Arc<Telemetry>>, every: Duration) {
    let mut local = state.subscribe_demotions();
    loop {
        match sync(&doc, &state, telemetry.as_deref()).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, store = %doc.describe(), "cannot share demotions now"),
        }
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One round; `Ok(true)` when a conflicting write calls for another at once.
async fn sync(doc: &SharedDoc, state: &ConfigState, telemetry: Option<&Telemetry>) -> Result<bool, String> {
    let (mut data, version) = doc.get().await?;
    let stored: Vec<Demotion> = match data.get(KEY).and_then(|v| v.as_str()) {
        Some(text) if !text.is_empty() => {
            serde_json::from_str(text).map_err(|e| format!("{KEY} is not a demotion list: {e}"))?
        }
        _ => Vec::new(),
    };
    let ours = state.demotions();
    let merged = merge(&stored, &ours);
    let mut write = !same(&merged, &stored) || version.is_empty();
    if !same(&merged, &stored) {
        data.insert(KEY.into(), serde_json::to_string(&merged).map_err(|e| e.to_string())?.into());
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
    if write && !doc.put(&data, &version).await? {
        return Ok(true);
    }
    if !same(&merged, &ours) {
        state.set_demotions(merged, "shared");
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, active: bool) -> Demotion {
        Demotion {
            id,
            feature: "f".into(),
            endpoint: format!("e{id}"),
            reason: "r".into(),
            at_unix_ms: id,
            active,
            applies: true,
            undone_by: (!active).then(|| "bob".into()),
        }
    }

    #[test]
    fn merging_keeps_everything_known_and_an_undo_wins() {
        let stored = vec![d(1, true), d(2, true)];
        let ours = vec![d(1, false), d(3, true)];
        let m = merge(&stored, &ours);
        assert_eq!(m.iter().map(|x| (x.id, x.active)).collect::<Vec<_>>(), [(1, false), (2, true), (3, true)]);
        assert_eq!(m[0].undone_by.as_deref(), Some("bob"));
        // An undo is never reverted by a replica that has not heard of it.
        assert!(!merge(&m, &[d(1, true)])[0].active);
        assert!(same(&m, &merge(&m, &m)));
    }
}
