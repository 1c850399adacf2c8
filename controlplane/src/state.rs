//! The routing config the control plane serves, and every change to it.
//!
//! What is pushed is the *base* config — from the watched directory or the admin API, the last
//! write wins — with the active feedback *demotions* applied on top: a demoted endpoint moves one
//! place down its feature's hierarchy. Keeping demotions apart from the base means a later edit
//! of the base does not silently drop them (they are re-applied, or reported as not applicable),
//! and undoing one restores exactly what the platform team wrote.
//!
//! Every published change is recorded with who, when, what and a diff. An invalid result is
//! never published.

use crate::ads::{Discovery, now_ms};
use crate::snapshot::Snapshot;
use serde_json::Value;
use spillway_api::config::{ConfigErrors, RoutingConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    pub version: String,
    pub previous: Option<String>,
    pub who: String,
    pub at_unix_ms: u64,
    pub action: String,
    pub diff: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Demotion {
    pub id: u64,
    pub feature: String,
    pub endpoint: String,
    pub reason: String,
    pub at_unix_ms: u64,
    pub active: bool,
    /// Whether the current base config still lets it apply (the endpoint is in the feature's
    /// hierarchy and not already last).
    pub applies: bool,
    pub undone_by: Option<String>,
}

#[derive(Default)]
struct Inner {
    base: Option<RoutingConfig>,
    demotions: Vec<Demotion>,
    history: Vec<Change>,
    /// Base config behind each published version, for rollback.
    known: HashMap<String, RoutingConfig>,
    next_id: u64,
}

pub struct ConfigState {
    discovery: Arc<Discovery>,
    inner: Mutex<Inner>,
    /// The config in force (demotions applied), for the fleet view and lease book.
    effective: watch::Sender<Option<Arc<RoutingConfig>>>,
    /// Who may write the base config (see [`Owner`]).
    owner: Mutex<Owner>,
    /// Bumped when a demotion is made or undone here, for `shared` to write it out.
    demotions_changed: watch::Sender<u64>,
}

/// Who writes the base config. One owner, so that no edit silently undoes another: a change made
/// through the admin API while a watched directory owns the config would be overwritten by the
/// next file change, so it is refused instead, naming where to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The admin API (a config file read once at start, or none).
    Admin,
    /// A watched directory (GitOps, a ConfigMap): edit its files.
    Directory(std::path::PathBuf),
    /// A config file read once at start by one of several replicas: a write through one
    /// replica's admin API would reach neither the others nor a restart, so none is taken.
    ReplicatedFile(std::path::PathBuf),
    /// A shared store every replica watches (etcd): the admin API writes through to it, with a
    /// precondition on the revision the edit was based on. Named for messages.
    Store(String),
}

fn pretty(s: &Snapshot) -> String {
    serde_json::from_slice::<Value>(&s.config_json).map(|v| pretty_json(&v)).unwrap_or_default()
}

fn pretty_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The unified diff between two configs (JSON; `None` for "nothing before"), as every history
/// shows a change.
pub fn config_diff(before: Option<&Value>, after: &Value) -> String {
    text_diff(&before.map(pretty_json).unwrap_or_default(), &pretty_json(after))
}

fn text_diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after).unified_diff().header("before", "after").to_string()
}

/// The base with every active demotion applied; marks which ones still apply.
fn effective(base: &RoutingConfig, demotions: &mut [Demotion]) -> RoutingConfig {
    let mut c = base.clone();
    for d in demotions.iter_mut().filter(|d| d.active) {
        let h = c.features.get_mut(&d.feature).map(|f| &mut f.hierarchy);
        d.applies = match h.and_then(|h| h.iter().position(|e| *e == d.endpoint).map(|i| (h, i))) {
            Some((h, i)) if i + 1 < h.len() => {
                h.swap(i, i + 1);
                true
            }
            _ => false,
        };
    }
    c
}

impl ConfigState {
    /// The control plane's metrics registry.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.discovery.metrics()
    }

    pub fn new(discovery: Arc<Discovery>) -> Arc<ConfigState> {
        Arc::new(ConfigState {
            discovery,
            inner: Mutex::new(Inner::default()),
            effective: watch::Sender::new(None),
            owner: Mutex::new(Owner::Admin),
            demotions_changed: watch::Sender::new(0),
        })
    }

    pub fn owner(&self) -> Owner {
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_owner(&self, owner: Owner) {
        *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = owner;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires with the config in force whenever it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<RoutingConfig>>> {
        self.effective.subscribe()
    }

    /// The version in force ("" before the first).
    pub fn version(&self) -> String {
        self.discovery.current().map(|s| s.version.clone()).unwrap_or_default()
    }

    /// The base config behind a published version, if this replica published it.
    pub fn base_of(&self, version: &str) -> Option<RoutingConfig> {
        self.lock().known.get(version).cloned()
    }

    pub fn history(&self) -> Vec<Change> {
        self.lock().history.clone()
    }

    pub fn demotions(&self) -> Vec<Demotion> {
        self.lock().demotions.clone()
    }

    /// Builds and publishes what `inner` now describes; `Ok(None)` when nothing changed.
    fn publish(&self, inner: &mut Inner, who: &str, action: &str) -> Result<Option<Change>, ConfigErrors> {
        let Some(base) = &inner.base else { return Ok(None) };
        let config = effective(base, &mut inner.demotions);
        let s = Snapshot::build(&config)?;
        let previous = self.discovery.current();
        if previous.as_ref().is_some_and(|p| p.version == s.version) {
            return Ok(None);
        }
        let diff = text_diff(&previous.as_deref().map(pretty).unwrap_or_default(), &pretty(&s));
        let change = Change {
            version: s.version.clone(),
            previous: previous.map(|p| p.version.clone()),
            who: who.to_owned(),
            at_unix_ms: now_ms(),
            action: action.to_owned(),
            diff,
        };
        inner.known.insert(s.version.clone(), base.clone());
        inner.history.push(change.clone());
        self.discovery.publish(s);
        self.effective.send_replace(Some(Arc::new(config)));
        tracing::info!(version = %change.version, who, action, "routing config published");
        Ok(Some(change))
    }

    /// Whether `config` would publish as the base: the checks [`ConfigState::set_base`] makes,
    /// demotions applied, without publishing.
    pub fn check_base(&self, config: &RoutingConfig) -> Result<(), ConfigErrors> {
        let mut demotions = self.lock().demotions.clone();
        Snapshot::build(&effective(config, &mut demotions)).map(|_| ())
    }

    /// Replaces the base config (directory change, admin `PUT`).
    pub fn set_base(&self, config: RoutingConfig, who: &str, action: &str) -> Result<Option<Change>, ConfigErrors> {
        let mut inner = self.lock();
        let old = inner.base.replace(config);
        let r = self.publish(&mut inner, who, action);
        if r.is_err() {
            inner.base = old;
        }
        r
    }

    /// Restores the base config behind a published version; demotions stay as they are.
    pub fn rollback(&self, version: &str, who: &str) -> Result<Option<Change>, String> {
        let mut inner = self.lock();
        let base = inner.known.get(version).cloned().ok_or_else(|| format!("no known version {version}"))?;
        let old = inner.base.replace(base);
        self.publish(&mut inner, who, "rollback").map_err(|e| {
            inner.base = old;
            e.to_string()
        })
    }

    /// Demotes `endpoint` in `feature`'s hierarchy, unless an active demotion already does.
    pub fn demote(&self, feature: &str, endpoint: &str, reason: &str) -> Option<Demotion> {
        let mut inner = self.lock();
        if inner.demotions.iter().any(|d| d.active && d.feature == feature && d.endpoint == endpoint) {
            return None;
        }
        inner.next_id += 1;
        let d = Demotion {
            id: inner.next_id,
            feature: feature.to_owned(),
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
            at_unix_ms: now_ms(),
            active: true,
            applies: false,
            undone_by: None,
            // `applies` is settled by publish.
        };
        inner.demotions.push(d);
        // The history says why, so a config diff nobody typed is never a mystery.
        match self.publish(&mut inner, "feedback", &format!("demote {endpoint} in {feature}: {reason}")) {
            Ok(_) => {}
            Err(e) => {
                inner.demotions.pop();
                tracing::error!(feature, endpoint, error = %e, "demotion would make the config invalid; not applied");
                return None;
            }
        }
        let d = inner.demotions.last().cloned()?;
        self.demotions_changed.send_modify(|n| *n += 1);
        if !d.applies {
            tracing::info!(feature, endpoint, "demotion recorded; the endpoint is already last in the hierarchy");
        }
        Some(d)
    }

    /// Fires when a demotion is made or undone on this replica.
    pub fn subscribe_demotions(&self) -> watch::Receiver<u64> {
        self.demotions_changed.subscribe()
    }

    /// Takes the demotions every replica shares (see `shared`), re-applying them to the base.
    pub fn set_demotions(&self, demotions: Vec<Demotion>, who: &str) {
        let mut inner = self.lock();
        if inner.demotions == demotions {
            return;
        }
        let old = std::mem::replace(&mut inner.demotions, demotions);
        inner.next_id = inner.demotions.iter().map(|d| d.id).max().unwrap_or(0).max(inner.next_id);
        if let Err(e) = self.publish(&mut inner, who, "demotions shared by another replica") {
            tracing::error!(error = %e, "shared demotions would make the config invalid; keeping ours");
            inner.demotions = old;
        }
    }

    /// Gives a demotion made here the id `to`: another replica stored a different one under its
    /// id first (two leaders for a moment, at a handover).
    pub fn renumber(&self, from: u64, to: u64) {
        let mut inner = self.lock();
        if inner.demotions.iter().any(|d| d.id == to) {
            return;
        }
        if let Some(d) = inner.demotions.iter_mut().find(|d| d.id == from) {
            d.id = to;
        }
        inner.demotions.sort_by_key(|d| d.id);
        inner.next_id = inner.next_id.max(to);
    }

    /// Undoes a demotion: the hierarchy is the base config's again.
    pub fn undo(&self, id: u64, who: &str) -> Result<Demotion, String> {
        let mut inner = self.lock();
        let i = inner
            .demotions
            .iter()
            .position(|d| d.id == id && d.active)
            .ok_or_else(|| format!("no active demotion {id}"))?;
        inner.demotions[i].active = false;
        inner.demotions[i].undone_by = Some(who.to_owned());
        if let Err(e) = self.publish(&mut inner, who, &format!("undo demotion {id}")) {
            inner.demotions[i].active = true;
            inner.demotions[i].undone_by = None;
            return Err(e.to_string());
        }
        self.demotions_changed.send_modify(|n| *n += 1);
        Ok(inner.demotions[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_api::config::load_str;

    const YAML: &str = "endpoints:\n  a: { provider: openai, model: m }\n  b: { provider: openai, model: m }\n  c: { provider: openai, model: m }\nfeatures:\n  search: { hierarchy: [a, b, c] }\n  recap: { hierarchy: [a] }\n";

    fn hierarchy(s: &ConfigState, f: &str) -> Vec<String> {
        s.subscribe().borrow().as_ref().unwrap().features[f].hierarchy.clone()
    }

    #[test]
    fn a_demotion_moves_the_endpoint_down_survives_base_edits_and_can_be_undone() {
        let d = Discovery::new();
        let s = ConfigState::new(d.clone());
        s.set_base(load_str(YAML, "t").unwrap(), "dir", "directory").unwrap();
        let v0 = d.current().unwrap().version.clone();
        let dem = s.demote("search", "a", "feedback fell").unwrap();
        assert!(dem.applies);
        assert_eq!(hierarchy(&s, "search"), ["b", "a", "c"]);
        assert_ne!(d.current().unwrap().version, v0, "a new snapshot");
        assert!(s.demote("search", "a", "again").is_none(), "one active demotion per (feature, endpoint)");
        // An edit of the base keeps the demotion applied.
        let edited = YAML.replace("recap: { hierarchy: [a] }", "recap: { hierarchy: [a, c] }");
        s.set_base(load_str(&edited, "t").unwrap(), "alice", "replace").unwrap();
        assert_eq!(hierarchy(&s, "search"), ["b", "a", "c"]);
        let h = s.history();
        assert_eq!(h[1].who, "feedback");
        assert!(h[1].diff.contains("\"b\""), "{}", h[1].diff);
        s.undo(dem.id, "bob").unwrap();
        assert_eq!(hierarchy(&s, "search"), ["a", "b", "c"]);
        assert!(s.undo(dem.id, "bob").is_err(), "already undone");
        assert_eq!(s.demotions()[0].undone_by.as_deref(), Some("bob"));
        // A demotion of a last (or only) endpoint changes nothing and says so.
        assert!(!s.demote("recap", "c", "meh").unwrap().applies);
    }
}
