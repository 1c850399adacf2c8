//! What the control plane's replicas must agree on beyond the config every one of them watches:
//! the feedback demotions. The leader makes them (it alone sees all the feedback); an editor may
//! undo one through any replica; every replica must serve snapshots with the same ones applied,
//! and a restart must not forget them.
//!
//! They live in one ConfigMap, written only with `resourceVersion` preconditions. Each replica
//! merges what it has with what is stored — by id; an undo is final, whichever side has it — and
//! writes back if the store lacks something, or takes what the store adds. New ids are never
//! reused: a new demotion takes the next id after every one the replica has seen.

use crate::kube::{self, Kube};
use crate::state::{ConfigState, Demotion};
use std::sync::Arc;
use tokio::time::Duration;

const KEY: &str = "demotions.json";

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

/// Keeps this replica's demotions and the ConfigMap `namespace/name` in step, until dropped:
/// at once when a demotion is made or undone here, and every `every` to take others' changes.
pub async fn run(kube: Arc<Kube>, namespace: String, name: String, state: Arc<ConfigState>, every: Duration) {
    let mut local = state.subscribe_demotions();
    loop {
        match sync(&kube, &namespace, &name, &state).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, configmap = %format!("{namespace}/{name}"), "cannot share demotions now")
            }
        }
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One round; `Ok(true)` when a conflicting write calls for another at once.
async fn sync(kube: &Kube, namespace: &str, name: &str, state: &ConfigState) -> Result<bool, String> {
    let (stored, version) = match kube::get_configmap(kube, namespace, name, KEY).await? {
        Some((text, version)) if text.is_empty() => (Vec::new(), version),
        Some((text, version)) => {
            let list: Vec<Demotion> =
                serde_json::from_str(&text).map_err(|e| format!("{KEY} is not a demotion list: {e}"))?;
            (list, version)
        }
        None => (Vec::new(), String::new()),
    };
    let ours = state.demotions();
    let merged = merge(&stored, &ours);
    if !same(&merged, &stored) || version.is_empty() {
        let text = serde_json::to_string(&merged).map_err(|e| e.to_string())?;
        if !kube::write_configmap(kube, namespace, name, KEY, &text, &version).await? {
            return Ok(true);
        }
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
