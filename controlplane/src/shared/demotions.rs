//! Feedback demotions as stored objects, one per demotion: a `SpillwayDemotion` named
//! `demotion-<id>` on Kubernetes, the key `<prefix>/demotions/<id>` on etcd.
//!
//! Why one object each rather than one shared list: a demotion is created once, by whoever made
//! it, with a create that fails if the name is taken — two replicas that both led for a moment
//! cannot overwrite each other's, and the loser renumbers its own. An undo is a write of that one
//! object conditional on the version read (`resourceVersion` / `mod_revision`), so it can be
//! made from kubectl or etcdctl too, and is never lost to a concurrent write of another one.
//!
//! Each replica, every round: lists the store; creates what it made and the store lacks; writes
//! the undos it made; then serves the store's list merged with its own (an undo is final,
//! whichever side has it). An object that the replica has seen in the store and that is gone
//! was deleted on purpose (pruned, or by an operator): it is forgotten here too. Undone
//! demotions beyond the last [`UNDONE_KEPT`] are pruned.

use crate::crd::{SpillwayDemotion, SpillwayDemotionSpec};
use crate::etcd::Etcd;
use crate::state::{ConfigState, Demotion};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::{HashMap, HashSet};

/// Undone demotions kept in the store, newest first, for the record; older ones are deleted.
pub const UNDONE_KEPT: usize = 50;

const NAME_PREFIX: &str = "demotion-";

/// Where the demotions are kept.
pub enum DemotionStore {
    /// `SpillwayDemotion` objects of one namespace.
    Objects(Api<SpillwayDemotion>),
    Etcd(Etcd),
}

/// A demotion as the store holds it, with the version to write against.
pub struct Stored {
    pub demotion: Demotion,
    pub version: String,
}

fn to_spec(d: &Demotion) -> SpillwayDemotionSpec {
    SpillwayDemotionSpec {
        feature: d.feature.clone(),
        endpoint: d.endpoint.clone(),
        reason: d.reason.clone(),
        at_unix_ms: d.at_unix_ms,
        active: d.active,
        undone_by: d.undone_by.clone(),
    }
}

fn from_spec(id: u64, s: SpillwayDemotionSpec) -> Demotion {
    Demotion {
        id,
        feature: s.feature,
        endpoint: s.endpoint,
        reason: s.reason,
        at_unix_ms: s.at_unix_ms,
        active: s.active,
        // Settled against each replica's own base when applied.
        applies: true,
        undone_by: s.undone_by,
    }
}

impl DemotionStore {
    pub fn describe(&self) -> String {
        match self {
            DemotionStore::Objects(_) => "SpillwayDemotion objects".to_owned(),
            DemotionStore::Etcd(e) => format!("etcd {}", e.key("demotions/")),
        }
    }

    fn etcd_key(e: &Etcd, id: u64) -> String {
        e.key(&format!("demotions/{id:020}"))
    }

    /// Every stored demotion.
    pub async fn list(&self) -> Result<Vec<Stored>, String> {
        match self {
            DemotionStore::Objects(api) => {
                let list = api.list(&ListParams::default()).await.map_err(|e| format!("listing demotions: {e}"))?;
                let mut out = Vec::new();
                for o in list.items {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let Some(id) = name.strip_prefix(NAME_PREFIX).and_then(|n| n.parse::<u64>().ok()) else {
                        tracing::warn!(object = %name, "a SpillwayDemotion not named demotion-<id> is ignored");
                        continue;
                    };
                    let version = o.metadata.resource_version.clone().unwrap_or_default();
                    out.push(Stored { demotion: from_spec(id, o.spec), version });
                }
                Ok(out)
            }
            DemotionStore::Etcd(e) => {
                let prefix = e.key("demotions/");
                let r = e
                    .retry(|c| {
                        let p = prefix.as_str();
                        async move { c.kv_client().get(p, Some(GetOptions::new().with_prefix())).await }
                    })
                    .await
                    .map_err(|err| format!("etcd get {prefix}: {err}"))?;
                let mut out = Vec::new();
                for kv in r.kvs() {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let id = key.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok());
                    let spec = serde_json::from_slice::<SpillwayDemotionSpec>(kv.value());
                    match (id, spec) {
                        (Some(id), Ok(spec)) => {
                            out.push(Stored { demotion: from_spec(id, spec), version: kv.mod_revision().to_string() })
                        }
                        _ => tracing::warn!(%key, "not a demotion; ignored"),
                    }
                }
                Ok(out)
            }
        }
    }

    /// Creates `d` under its id; `Ok(false)` when the id is taken.
    pub async fn create(&self, d: &Demotion) -> Result<bool, String> {
        match self {
            DemotionStore::Objects(api) => {
                let object = SpillwayDemotion::new(&format!("{NAME_PREFIX}{}", d.id), to_spec(d));
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(format!("creating demotion {}: {e}", d.id)),
                }
            }
            DemotionStore::Etcd(e) => {
                let key = Self::etcd_key(e, d.id);
                let body = serde_json::to_vec(&to_spec(d)).map_err(|err| err.to_string())?;
                let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
                let txn = Txn::new().when([absent]).and_then([TxnOp::put(key.as_str(), body, None)]);
                Ok(e.txn(txn).await.map_err(|err| format!("etcd create {key}: {err}"))?.succeeded())
            }
        }
    }

    /// Marks the stored demotion undone by `by`, if it is still at the version read;
    /// `Ok(false)` when it changed since.
    pub async fn undo(&self, s: &Stored, by: Option<&str>) -> Result<bool, String> {
        let id = s.demotion.id;
        match self {
            DemotionStore::Objects(api) => {
                // A resourceVersion in a patch is a precondition: 409 if the object moved on.
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": s.version},
                    "spec": {"active": false, "undoneBy": by},
                });
                let name = format!("{NAME_PREFIX}{id}");
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
                    Err(e) => Err(format!("undoing demotion {id}: {e}")),
                }
            }
            DemotionStore::Etcd(e) => {
                let key = Self::etcd_key(e, id);
                let rev = s.version.parse::<i64>().map_err(|_| format!("not an etcd revision: {}", s.version))?;
                let undone = Demotion { active: false, undone_by: by.map(str::to_owned), ..s.demotion.clone() };
                let body = serde_json::to_vec(&to_spec(&undone)).map_err(|err| err.to_string())?;
                let unchanged = Compare::mod_revision(key.as_str(), CompareOp::Equal, rev);
                let txn = Txn::new().when([unchanged]).and_then([TxnOp::put(key.as_str(), body, None)]);
                Ok(e.txn(txn).await.map_err(|err| format!("etcd write {key}: {err}"))?.succeeded())
            }
        }
    }

    /// Deletes an undone demotion for good (gone already is fine).
    pub async fn delete(&self, id: u64) -> Result<(), String> {
        match self {
            DemotionStore::Objects(api) => {
                match api.delete(&format!("{NAME_PREFIX}{id}"), &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(format!("deleting demotion {id}: {e}")),
                }
            }
            DemotionStore::Etcd(e) => {
                let key = Self::etcd_key(e, id);
                e.retry(|c| {
                    let k = key.as_str();
                    async move { c.kv_client().delete(k, None).await }
                })
                .await
                .map(|_| ())
                .map_err(|err| format!("etcd delete {key}: {err}"))
            }
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

/// The same demotion — made once, by one replica — whatever has happened to it since.
fn same_origin(a: &Demotion, b: &Demotion) -> bool {
    a.id == b.id && a.feature == b.feature && a.endpoint == b.endpoint && a.at_unix_ms == b.at_unix_ms
}

/// One replica's side of the store.
pub struct Sync {
    store: DemotionStore,
    /// Ids this replica has seen stored: one missing now was deleted, not yet to be created.
    seen: HashSet<u64>,
}

impl Sync {
    pub fn new(store: DemotionStore) -> Sync {
        Sync { store, seen: HashSet::new() }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// One round; `Ok(true)` when a lost race calls for another at once.
    pub async fn round(&mut self, state: &ConfigState) -> Result<bool, String> {
        let stored = self.store.list().await?;
        let by_id: HashMap<u64, &Stored> = stored.iter().map(|s| (s.demotion.id, s)).collect();
        let ours = state.demotions();
        for d in &ours {
            match by_id.get(&d.id) {
                None if self.seen.contains(&d.id) => {}
                None => {
                    if !self.store.create(d).await? {
                        return Ok(true);
                    }
                    tracing::info!(id = d.id, feature = %d.feature, endpoint = %d.endpoint, "demotion stored");
                }
                Some(s) if !same_origin(&s.demotion, d) => {
                    // Another replica stored a different demotion under this id first (two
                    // leaders for a moment, at a handover): ours takes the next free id.
                    let next = stored.iter().map(|s| s.demotion.id).chain(ours.iter().map(|d| d.id)).max();
                    let fresh = next.unwrap_or(0) + 1;
                    tracing::info!(from = d.id, to = fresh, "demotion id taken by another replica; renumbered");
                    state.renumber(d.id, fresh);
                    return Ok(true);
                }
                Some(s) if !d.active && s.demotion.active => {
                    if !self.store.undo(s, d.undone_by.as_deref()).await? {
                        return Ok(true);
                    }
                }
                Some(_) => {}
            }
        }
        let deleted: HashSet<u64> = self.seen.iter().copied().filter(|id| !by_id.contains_key(id)).collect();
        let ours: Vec<Demotion> = ours.into_iter().filter(|d| !deleted.contains(&d.id)).collect();
        let listed: Vec<Demotion> = stored.iter().map(|s| s.demotion.clone()).collect();
        self.seen = by_id.keys().copied().collect();
        let merged = merge(&listed, &ours);
        if !same(&merged, &state.demotions()) {
            state.set_demotions(merged, "shared");
        }
        self.prune(&listed).await;
        Ok(false)
    }

    /// Deletes undone demotions beyond the newest [`UNDONE_KEPT`].
    async fn prune(&self, listed: &[Demotion]) {
        let mut undone: Vec<&Demotion> = listed.iter().filter(|d| !d.active).collect();
        if undone.len() <= UNDONE_KEPT {
            return;
        }
        undone.sort_by_key(|d| std::cmp::Reverse(d.id));
        for d in &undone[UNDONE_KEPT..] {
            if let Err(e) = self.store.delete(d.id).await {
                tracing::warn!(error = %e, "cannot prune an undone demotion now");
                return;
            }
        }
    }
}

/// The same demotions, ignoring `applies` (each replica settles that against its own base).
fn same(a: &[Demotion], b: &[Demotion]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Demotion { applies: y.applies, ..x.clone() } == *y)
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

    #[test]
    fn a_demotion_round_trips_through_its_object_spec() {
        let undone = d(7, false);
        assert_eq!(from_spec(7, to_spec(&undone)), undone);
        let json = serde_json::to_value(to_spec(&d(3, true))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"feature": "f", "endpoint": "e3", "reason": "r", "atUnixMs": 3, "active": true})
        );
    }
}
