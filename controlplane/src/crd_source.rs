//! The routing config from `SpillwayRouting` objects on the Kubernetes API (see `crd`): every
//! replica watches the namespace's objects (kube-runtime) and serves their merge, so all serve
//! the same snapshot without a leader, as istiod serves its config. Objects are merged like the
//! files of a config directory; what the control plane made of each is written to its
//! `.status.conditions` (`Accepted`), naming the problems that are that object's.
//!
//! One owner per object. Objects written with kubectl or a GitOps tool belong to them; the admin
//! API writes only its own object, `spillway-admin` (labelled `spillway.dev/owner: admin-api`),
//! replacing it with a `resourceVersion` precondition, so two editors racing through two
//! replicas get one success and one 409. An edit through the API may not change or remove what
//! another object defines: that is refused with 409 naming the object to edit instead.

use crate::crd::{Condition, RoutingStatus, SpillwayRouting, SpillwayRoutingSpec};
use crate::state::{ConfigState, Owner};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use spillway_api::config::{ConfigErrors, RoutingConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_stream::StreamExt;

/// The object the admin API owns.
pub const ADMIN_OBJECT: &str = "spillway-admin";
const OWNER_LABEL: &str = "spillway.dev/owner";
const ADMIN_OWNER: &str = "admin-api";
const CHANGED_BY: &str = "spillway.dev/changed-by";
const REASON: &str = "spillway.dev/change-reason";

pub struct CrdConfig {
    api: Api<SpillwayRouting>,
    namespace: String,
    state: Arc<ConfigState>,
    /// The objects as last seen, by name.
    objects: Mutex<BTreeMap<String, SpillwayRouting>>,
    history: crate::crd_history::History,
    /// The last base version this replica recorded in the history.
    recorded: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for CrdConfig {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

/// Why an edit through the admin API was not made.
#[derive(Debug)]
pub enum CrdWriteError {
    /// The admin object changed since the version the edit was based on.
    Conflict(String),
    /// The edit would change what another object owns.
    OwnedElsewhere(String),
    Invalid(ConfigErrors),
    Api(String),
}

impl std::fmt::Display for CrdWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrdWriteError::Conflict(m) | CrdWriteError::OwnedElsewhere(m) | CrdWriteError::Api(m) => f.write_str(m),
            CrdWriteError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

fn label(name: &str) -> String {
    format!("SpillwayRouting/{name}")
}

fn is_admins(o: &SpillwayRouting) -> bool {
    o.metadata.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).is_some_and(|v| v == ADMIN_OWNER)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl CrdConfig {
    /// Watches the SpillwayRouting objects of `namespace`; returns once the first complete list
    /// has been read and published (or found invalid).
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        state: Arc<ConfigState>,
    ) -> Result<Arc<CrdConfig>, String> {
        let api: Api<SpillwayRouting> = Api::namespaced(client, namespace);
        let this = Arc::new(CrdConfig {
            history: crate::crd_history::History::new(api.clone().into_client(), namespace),
            recorded: Mutex::default(),
            api: api.clone(),
            namespace: namespace.to_owned(),
            state,
            objects: Mutex::default(),
            task: Mutex::default(),
        });
        this.state.set_owner(Owner::Store(format!("SpillwayRouting objects in namespace {namespace}")));
        let (listed_tx, mut listed) = watch::channel(false);
        let me = this.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            let mut buffer = BTreeMap::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Init) => buffer.clear(),
                    Ok(Event::InitApply(o)) => {
                        buffer.insert(o.metadata.name.clone().unwrap_or_default(), o);
                    }
                    Ok(Event::InitDone) => {
                        *me.lock() = std::mem::take(&mut buffer);
                        me.publish().await;
                        listed_tx.send_replace(true);
                    }
                    Ok(Event::Apply(o)) => {
                        me.lock().insert(o.metadata.name.clone().unwrap_or_default(), o);
                        me.publish().await;
                    }
                    Ok(Event::Delete(o)) => {
                        me.lock().remove(o.metadata.name.as_deref().unwrap_or_default());
                        me.publish().await;
                    }
                    Err(e) => tracing::warn!(error = %e, "watching SpillwayRouting objects"),
                }
            }
        });
        *this.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(30), listed.wait_for(|l| *l)).await;
        if !matches!(waited, Ok(Ok(_))) {
            return Err(format!("could not list the SpillwayRouting objects of namespace {namespace} within 30 s"));
        }
        Ok(this)
    }

    /// The problems `config`, as object `name`, would bring into the merge with the other
    /// objects: those in its own entries, and names it defines that another object already does.
    /// Problems that are only other objects' do not count against it.
    pub fn check_with(&self, name: &str, config: RoutingConfig) -> Result<(), ConfigErrors> {
        let objects = self.lock().clone();
        let mut parts: Vec<(String, RoutingConfig)> = objects
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, o)| (label(n), o.spec.config.clone()))
            .collect();
        parts.push((label(name), config));
        match crate::source::merge(parts, &format!("namespace {}", self.namespace)) {
            Ok(_) => Ok(()),
            Err(ConfigErrors(all)) => {
                let own: Vec<_> = all.into_iter().filter(|e| e.file == label(name)).collect();
                if own.is_empty() { Ok(()) } else { Err(ConfigErrors(own)) }
            }
        }
    }

    /// Writes `config` as the admin API's object when the namespace has no SpillwayRouting
    /// objects at all (a first start); a replica that loses that race, or finds objects, keeps
    /// what is there.
    pub async fn seed(&self, config: RoutingConfig, who: &str) -> Result<(), String> {
        if !self.lock().is_empty() {
            tracing::info!(namespace = %self.namespace, "SpillwayRouting objects exist; --config only seeds an empty namespace");
            return Ok(());
        }
        match self.write(config, who, "seed", Some("0".into())).await {
            Ok(_) | Err(CrdWriteError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SpillwayRouting>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Merges the objects and publishes the result; writes each object's `Accepted` condition.
    async fn publish(&self) {
        let objects = self.lock().clone();
        if objects.is_empty() {
            tracing::warn!(namespace = %self.namespace, "no SpillwayRouting objects; the last config stays in force");
            return;
        }
        let parts = objects.iter().map(|(n, o)| (label(n), o.spec.config.clone())).collect();
        let merged = crate::source::merge(parts, &format!("namespace {}", self.namespace));
        // Who changed it last: the most recently written object.
        let latest =
            objects.values().max_by_key(|o| o.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()));
        let who = latest
            .and_then(|o| o.metadata.annotations.as_ref()?.get(CHANGED_BY).cloned())
            .unwrap_or_else(|| "kubernetes".into());
        let action = latest.map_or_else(String::new, |o| {
            let reason = o.metadata.annotations.as_ref().and_then(|a| a.get(REASON)).map(|r| format!(": {r}"));
            format!("{} changed{}", label(o.metadata.name.as_deref().unwrap_or_default()), reason.unwrap_or_default())
        });
        let published = merged.clone().and_then(|c| self.state.set_base(c, &who, &action));
        if let (Ok(base), Ok(_)) = (&merged, &published) {
            self.record(base, &who, &action).await;
        }
        let verdicts: BTreeMap<String, (bool, String, String)> = match published {
            Ok(published) => {
                if let Some(c) = published {
                    tracing::info!(version = %c.version, %who, "routing config from SpillwayRouting objects published");
                }
                // No version in the message: replicas briefly at different versions would
                // otherwise rewrite each other's status back and forth.
                objects.keys().map(|n| (n.clone(), (true, "Merged".into(), "in force".into()))).collect()
            }
            Err(errors) => {
                tracing::error!("SpillwayRouting objects are invalid: {errors}; the last good snapshot stays");
                objects
                    .keys()
                    .map(|n| {
                        let own: Vec<String> = errors
                            .0
                            .iter()
                            .filter(|e| e.file == label(n))
                            .map(|e| format!("{}: {}", e.path, e.message))
                            .collect();
                        let verdict = if own.is_empty() {
                            (
                                false,
                                "OtherObjectInvalid".into(),
                                format!("not in force: the merge is invalid: {errors}"),
                            )
                        } else {
                            (false, "Invalid".into(), own.join("; "))
                        };
                        (n.clone(), verdict)
                    })
                    .collect()
            }
        };
        for (name, (accepted, reason, message)) in verdicts {
            let Some(o) = objects.get(&name) else { continue };
            self.set_condition(o, accepted, &reason, &message).await;
        }
    }

    /// Records a valid merged config in the shared history, once per version per replica.
    async fn record(&self, base: &RoutingConfig, who: &str, action: &str) {
        let Ok(version) = crate::snapshot::Snapshot::build(base).map(|s| s.version.clone()) else { return };
        if self.recorded.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(version.as_str()) {
            return;
        }
        match self.history.record(base, who, action).await {
            Ok(()) => *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(version),
            Err(e) => tracing::warn!(error = %e, "cannot record the config history"),
        }
    }

    /// The history every replica shares.
    pub fn history(&self) -> &crate::crd_history::History {
        &self.history
    }

    /// Writes the `Accepted` condition unless the object already says the same.
    async fn set_condition(&self, o: &SpillwayRouting, accepted: bool, reason: &str, message: &str) {
        let status = if accepted { "True" } else { "False" };
        let current = o.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.kind == "Accepted"));
        let generation = o.metadata.generation;
        if current.is_some_and(|c| {
            c.status == status && c.reason == reason && c.message == message && c.observed_generation == generation
        }) {
            return;
        }
        let since = current.filter(|c| c.status == status).map_or_else(now, |c| c.last_transition_time.clone());
        let condition = Condition {
            kind: "Accepted".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: since,
        };
        let patch = json!({"status": RoutingStatus { conditions: vec![condition] }});
        let name = o.metadata.name.clone().unwrap_or_default();
        if let Err(e) = self.api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(object = %name, error = %e, "cannot write the status of a SpillwayRouting");
        }
    }

    /// The admin object's generation (its spec's version; status writes do not change it), as
    /// this replica last saw it: what an edit is based on.
    pub fn revision(&self) -> Option<String> {
        self.lock().get(ADMIN_OBJECT).and_then(|o| o.metadata.generation).map(|g| g.to_string())
    }

    /// Makes `desired` the config: what other objects own must stay as they define it; the rest
    /// is written to the admin object, if its spec is still at generation `expected` (else at the
    /// one this replica has seen).
    pub async fn write(
        &self,
        desired: RoutingConfig,
        who: &str,
        reason: &str,
        expected: Option<String>,
    ) -> Result<String, CrdWriteError> {
        self.state.check_base(&desired).map_err(CrdWriteError::Invalid)?;
        let objects = self.lock().clone();
        let mut mine = desired.clone();
        for (name, o) in objects.iter().filter(|(_, o)| !is_admins(o)) {
            take_owned(&mut mine, &o.spec.config, &desired, name)?;
        }
        let based_on = expected.or_else(|| self.revision()).unwrap_or_else(|| "0".into());
        let mut object = SpillwayRouting::new(ADMIN_OBJECT, SpillwayRoutingSpec { config: mine });
        object.metadata.namespace = Some(self.namespace.clone());
        object.metadata.labels = Some([(OWNER_LABEL.to_owned(), ADMIN_OWNER.to_owned())].into());
        object.metadata.annotations =
            Some([(CHANGED_BY.to_owned(), who.to_owned()), (REASON.to_owned(), reason.to_owned())].into());
        // A status write between our read and our replace changes the resourceVersion but not the
        // spec: read again and retry; a spec change is a conflict.
        for attempt in 0..8u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt))).await;
            }
            let current = self.api.get_opt(ADMIN_OBJECT).await.map_err(|e| CrdWriteError::Api(e.to_string()))?;
            let generation = current.as_ref().and_then(|c| c.metadata.generation).unwrap_or(0).to_string();
            if generation != based_on {
                let by = current
                    .as_ref()
                    .and_then(|c| c.metadata.annotations.as_ref()?.get(CHANGED_BY).cloned())
                    .unwrap_or_else(|| "nobody (it was deleted)".into());
                return Err(CrdWriteError::Conflict(format!(
                    "SpillwayRouting/{ADMIN_OBJECT} changed since generation {based_on}: it is at generation {generation}, written by {by}; read it again (GET /v1/config) and retry"
                )));
            }
            let result = match &current {
                None => self.api.create(&PostParams::default(), &object).await,
                Some(c) => {
                    object.metadata.resource_version.clone_from(&c.metadata.resource_version);
                    self.api.replace(ADMIN_OBJECT, &PostParams::default(), &object).await
                }
            };
            match result {
                Ok(stored) => return Ok(stored.metadata.generation.unwrap_or(1).to_string()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(CrdWriteError::Api(e.to_string())),
            }
        }
        Err(CrdWriteError::Conflict(format!("SpillwayRouting/{ADMIN_OBJECT} kept changing; retry")))
    }
}

/// Removes from `mine` what `owned` (object `name`) defines, refusing if `desired` changes or
/// drops any of it.
fn take_owned(
    mine: &mut RoutingConfig,
    owned: &RoutingConfig,
    desired: &RoutingConfig,
    name: &str,
) -> Result<(), CrdWriteError> {
    fn section<T: PartialEq>(
        mine: &mut BTreeMap<String, T>,
        owned: &BTreeMap<String, T>,
        desired: &BTreeMap<String, T>,
        what: &str,
        object: &str,
    ) -> Result<(), CrdWriteError> {
        for (key, value) in owned {
            if desired.get(key) != Some(value) {
                return Err(CrdWriteError::OwnedElsewhere(format!(
                    "{what}.{key} belongs to SpillwayRouting/{object} (kubectl or GitOps): edit that object instead"
                )));
            }
            mine.remove(key);
        }
        Ok(())
    }
    section(&mut mine.endpoints, &owned.endpoints, &desired.endpoints, "endpoints", name)?;
    section(&mut mine.pools, &owned.pools, &desired.pools, "pools", name)?;
    section(&mut mine.features, &owned.features, &desired.features, "features", name)?;
    section(&mut mine.breakers, &owned.breakers, &desired.breakers, "breakers", name)?;
    if owned.retry_budget != spillway_api::config::RetryBudget::default() {
        if owned.retry_budget != desired.retry_budget {
            return Err(CrdWriteError::OwnedElsewhere(format!(
                "retry_budget belongs to SpillwayRouting/{name} (kubectl or GitOps): edit that object instead"
            )));
        }
        mine.retry_budget = Default::default();
    }
    Ok(())
}
