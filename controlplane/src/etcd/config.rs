//! The routing config kept in etcd: one key every replica watches, so every replica serves the
//! same snapshot without a leader, and an edit made through any replica's admin API reaches the
//! others' sidecars and survives every replica restarting.
//!
//! A write is a transaction that holds only if the config key is still at the revision the
//! writer based its edit on — the caller's `If-Match`, else the revision this replica last
//! applied — so two editors racing through two replicas cannot overwrite each other: the later
//! one gets a [`WriteError::Conflict`] naming who wrote first. The same transaction appends the
//! history entry, so the history and the config never disagree, and is identical on every
//! replica because every replica reads it from here.

use super::Etcd;
use crate::ads::now_ms;
use crate::snapshot::Snapshot;
use crate::state::{ConfigState, Owner};
use etcd_client::{Compare, CompareOp, DeleteOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use serde_json::Value;
use spillway_api::config::{ConfigErrors, RoutingConfig, load_str};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// History entries kept; older ones are deleted after each write.
pub const HISTORY_KEPT: u64 = 200;

/// What the config key holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    /// The history entry this config was written with.
    seq: u64,
    config: Value,
    who: String,
    action: String,
    at_unix_ms: u64,
}

/// One published edit, as every replica lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// The content version of the config written (the snapshot version while no feedback
    /// demotion applies); what a rollback names.
    pub version: String,
    pub previous: Option<String>,
    pub who: String,
    pub action: String,
    pub at_unix_ms: u64,
    pub diff: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// Why a write was not made.
#[derive(Debug)]
pub enum WriteError {
    /// Someone wrote since the revision the edit was based on.
    Conflict {
        expected: i64,
        current: i64,
        by: String,
    },
    Invalid(ConfigErrors),
    /// A rollback named no entry of the history.
    UnknownVersion(String),
    Store(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Conflict { expected, current, by } => write!(
                f,
                "the routing config changed since revision {expected}: it is at revision {current}, written by {by}; read it again (GET /v1/config) and retry"
            ),
            WriteError::Invalid(e) => write!(f, "{e}"),
            WriteError::UnknownVersion(v) => write!(f, "no version {v} in the history"),
            WriteError::Store(e) => write!(f, "the config store: {e}"),
        }
    }
}

/// A successful write.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub revision: i64,
    #[serde(flatten)]
    pub entry: Entry,
}

pub struct EtcdConfig {
    etcd: Etcd,
    state: Arc<ConfigState>,
    /// The config key's revision behind the base config in force here.
    applied: AtomicI64,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for EtcdConfig {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

fn parse(config: &Value) -> Result<RoutingConfig, ConfigErrors> {
    load_str(&config.to_string(), "<etcd>")
}

fn version_of(config: &RoutingConfig) -> Result<String, ConfigErrors> {
    Ok(Snapshot::build(config)?.version.clone())
}

fn store_err(e: impl std::fmt::Display) -> WriteError {
    WriteError::Store(e.to_string())
}

impl EtcdConfig {
    /// Reads the config from etcd — writing `seed` first if etcd has none — publishes it, and
    /// keeps following it. Fails if etcd cannot be read, or holds no config and no seed is given.
    pub async fn start(
        etcd: Etcd,
        state: Arc<ConfigState>,
        seed: Option<(RoutingConfig, String)>,
    ) -> Result<Arc<EtcdConfig>, String> {
        let this = Arc::new(EtcdConfig { etcd, state, applied: AtomicI64::new(0), task: Default::default() });
        let key = this.etcd.key("config");
        let mut revision = this.load().await?;
        if revision == 0 {
            let Some((config, who)) = seed else {
                return Err(format!("etcd holds no routing config at {key}, and no --config was given to seed it"));
            };
            match this.write(config, &who, "seed", Some(0)).await {
                Ok(w) => tracing::info!(revision = w.revision, %key, "seeded the routing config in etcd"),
                Err(WriteError::Conflict { .. }) => {} // another replica seeded it first
                Err(e) => return Err(e.to_string()),
            }
            revision = this.load().await?;
        } else if seed.is_some() {
            tracing::info!(%key, revision, "etcd already holds the routing config; --config only seeds an empty store");
        }
        this.state.set_owner(Owner::Store(format!("etcd {key}")));
        let follower = this.clone();
        let task = tokio::spawn(async move { follower.follow(revision + 1).await });
        *this.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(this)
    }

    /// The revision the base config in force here came from.
    pub fn revision(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Reads the config key and applies it; its header revision (0 when there is no config).
    async fn load(&self) -> Result<i64, String> {
        let key = self.etcd.key("config");
        let r = self.get(&key).await.map_err(|e| format!("etcd get {key}: {e}"))?;
        match r.kvs().first() {
            Some(kv) => {
                self.apply(kv.value(), kv.mod_revision());
                Ok(r.header().map_or(kv.mod_revision(), |h| h.revision()))
            }
            None => Ok(0),
        }
    }

    fn apply(&self, value: &[u8], revision: i64) {
        // A lagging watch may deliver an event older than a write this replica made and applied
        // itself; publishing it would briefly turn the config back.
        if self.applied.fetch_max(revision, Ordering::AcqRel) > revision {
            return;
        }
        let record: Record = match serde_json::from_slice(value) {
            Ok(r) => r,
            Err(e) => {
                return tracing::error!(revision, error = %e, "the config in etcd does not parse; the last good snapshot stays");
            }
        };
        match parse(&record.config).and_then(|c| self.state.set_base(c, &record.who, &record.action)) {
            Ok(Some(c)) => {
                tracing::info!(revision, version = %c.version, who = record.who, "routing config from etcd published")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(revision, "the config in etcd is invalid: {e}; the last good snapshot stays"),
        }
    }

    /// Watches the config key from `from`, re-reading it whenever the watch breaks.
    async fn follow(&self, mut from: i64) {
        let key = self.etcd.key("config");
        loop {
            match self.watch(&key, from).await {
                Ok(()) => tracing::warn!(%key, "etcd watch ended; resuming"),
                Err(e) => tracing::warn!(%key, error = %e, "etcd watch failed; resuming"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Events may have been compacted away meanwhile: read the key, then watch after it.
            match self.load().await {
                Ok(rev) if rev > 0 => from = rev + 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the config from etcd"),
            }
        }
    }

    async fn watch(&self, key: &str, from: i64) -> Result<(), String> {
        let options = WatchOptions::new().with_start_revision(from.max(1));
        let fail = |e: etcd_client::Error| {
            self.etcd.failed(&e);
            e.to_string()
        };
        let mut stream = self.etcd.waiting().watch_client().watch(key, Some(options)).await.map_err(fail)?;
        while let Some(r) = stream.message().await.map_err(fail)? {
            if r.canceled() {
                return Err(format!("canceled: {} (compacted at {})", r.cancel_reason(), r.compact_revision()));
            }
            for event in r.events() {
                match (event.event_type(), event.kv()) {
                    (EventType::Put, Some(kv)) => self.apply(kv.value(), kv.mod_revision()),
                    (EventType::Delete, _) => {
                        tracing::error!(%key, "the routing config was deleted from etcd; the last good snapshot stays")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Writes `config` if the config key is still at `expected` (else at the revision applied
    /// here); on success publishes it here at once, as the watch will on every other replica.
    pub async fn write(
        &self,
        config: RoutingConfig,
        who: &str,
        action: &str,
        expected: Option<i64>,
    ) -> Result<Written, WriteError> {
        // The same checks a publish makes (demotions applied), before anything is stored.
        self.state.check_base(&config).map_err(WriteError::Invalid)?;
        let key = self.etcd.key("config");
        let expected = expected.unwrap_or_else(|| self.revision());
        let r = self.get(&key).await.map_err(store_err)?;
        let current = r.kvs().first();
        let (current_rev, before): (i64, Option<Record>) = match current {
            Some(kv) => (kv.mod_revision(), serde_json::from_slice(kv.value()).ok()),
            None => (0, None),
        };
        if current_rev != expected {
            let by = before.as_ref().map_or_else(|| "nobody (it was deleted)".into(), |b| b.who.clone());
            return Err(WriteError::Conflict { expected, current: current_rev, by });
        }
        let value = serde_json::to_value(&config).map_err(store_err)?;
        let previous = before.as_ref().and_then(|b| parse(&b.config).ok()).and_then(|c| version_of(&c).ok());
        let seq = before.as_ref().map_or(0, |b| b.seq) + 1;
        let entry = Entry {
            seq,
            version: version_of(&config).map_err(WriteError::Invalid)?,
            previous,
            who: who.to_owned(),
            action: action.to_owned(),
            at_unix_ms: now_ms(),
            diff: crate::state::config_diff(before.as_ref().map(|b| &b.config), &value),
            config: Some(value.clone()),
        };
        let record =
            Record { seq, config: value, who: who.to_owned(), action: action.to_owned(), at_unix_ms: entry.at_unix_ms };
        let unchanged = match expected {
            0 => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            r => Compare::mod_revision(key.as_str(), CompareOp::Equal, r),
        };
        let history_key = self.history_key(seq);
        let txn = Txn::new().when([unchanged]).and_then([
            TxnOp::put(key.as_str(), serde_json::to_vec(&record).map_err(store_err)?, None),
            TxnOp::put(history_key, serde_json::to_vec(&entry).map_err(store_err)?, None),
        ]);
        // Conditional: if a first attempt did commit, a repeat fails its compare and is reported
        // as a conflict, never applied twice.
        let r = self.etcd.txn(txn).await.map_err(store_err)?;
        if !r.succeeded() {
            // Written between our read and our transaction: report the writer.
            let now = self.get(&key).await.map_err(store_err)?;
            let (current, by) = now.kvs().first().map_or((0, String::new()), |kv| {
                let who = serde_json::from_slice::<Record>(kv.value()).map(|r| r.who).unwrap_or_default();
                (kv.mod_revision(), who)
            });
            return Err(WriteError::Conflict { expected, current, by });
        }
        let revision = r.header().map_or(0, |h| h.revision());
        self.apply(&serde_json::to_vec(&record).map_err(store_err)?, revision);
        if seq > HISTORY_KEPT {
            let end = self.history_key(seq - HISTORY_KEPT + 1);
            let from = self.history_key(0);
            let options = DeleteOptions::new().with_range(end);
            let prune = self.etcd.retry(|c| {
                let (from, options) = (from.clone(), options.clone());
                async move { c.kv_client().delete(from, Some(options)).await }
            });
            if let Err(e) = prune.await {
                tracing::warn!(error = %e, "cannot prune the config history");
            }
        }
        Ok(Written { revision, entry: Entry { config: None, ..entry } })
    }

    async fn get(&self, key: &str) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        self.etcd.retry(|c| async move { c.kv_client().get(key, None).await }).await
    }

    fn history_key(&self, seq: u64) -> String {
        self.etcd.key(&format!("history/{seq:020}"))
    }

    /// Every kept entry, oldest first; with `configs`, each one's full config.
    pub async fn history(&self, configs: bool) -> Result<Vec<Entry>, String> {
        let prefix = self.etcd.key("history/");
        let r = self
            .etcd
            .retry(|c| {
                let p = prefix.as_str();
                async move { c.kv_client().get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|e| format!("etcd get {prefix}: {e}"))?;
        let mut out: Vec<Entry> =
            r.kvs().iter().filter_map(|kv| serde_json::from_slice::<Entry>(kv.value()).ok()).collect();
        out.sort_by_key(|e| e.seq);
        if !configs {
            out.iter_mut().for_each(|e| e.config = None);
        }
        Ok(out)
    }

    /// Writes again the config of the newest history entry with `version`.
    pub async fn rollback(&self, version: &str, who: &str, expected: Option<i64>) -> Result<Written, WriteError> {
        let history = self.history(true).await.map_err(WriteError::Store)?;
        let entry = history
            .iter()
            .rev()
            .find(|e| e.version == version)
            .ok_or_else(|| WriteError::UnknownVersion(version.to_owned()))?;
        let config = parse(entry.config.as_ref().unwrap_or(&Value::Null)).map_err(WriteError::Invalid)?;
        self.write(config, who, &format!("rollback to {version} (entry {})", entry.seq), expected).await
    }
}
