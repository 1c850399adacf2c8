//! The history of the routing config from SpillwayRouting objects, kept on the Kubernetes API as
//! `ControllerRevision`s (one per published base version, the last [`KEPT`]), so it is the same
//! on every replica, survives their restarts, and every entry is a rollback target.
//!
//! No leader is needed: a revision is named for the content version it holds, so replicas that
//! publish the same version create the same object and all but the first get `AlreadyExists`.
//! Its `revision` number is the time it was first published, in milliseconds, which orders them.

use crate::ads::now_ms;
use crate::snapshot::Snapshot;
use crate::state::{Change, config_diff};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use spillway_api::config::{RoutingConfig, load_str};

/// Revisions kept; older ones are deleted after each new one.
pub const KEPT: usize = 100;
const LABEL: &str = "spillway.dev/history";
const LABEL_VALUE: &str = "routing";

pub struct History {
    api: Api<ControllerRevision>,
}

fn name(version: &str) -> String {
    format!("spillway-routing-{version}")
}

impl History {
    pub fn new(client: kube::Client, namespace: &str) -> History {
        History { api: Api::namespaced(client, namespace) }
    }

    /// Records `base` (merged objects, no demotions) unless its version is already recorded.
    pub async fn record(&self, base: &RoutingConfig, who: &str, action: &str) -> Result<(), String> {
        let version = Snapshot::build(base).map_err(|e| e.to_string())?.version.clone();
        let mut revision = ControllerRevision {
            revision: i64::try_from(now_ms()).unwrap_or(i64::MAX),
            data: Some(RawExtension(json!({"config": base, "who": who, "action": action}))),
            ..Default::default()
        };
        revision.metadata.name = Some(name(&version));
        revision.metadata.labels = Some([(LABEL.to_owned(), LABEL_VALUE.to_owned())].into());
        match self.api.create(&PostParams::default(), &revision).await {
            Ok(_) => {}
            // Another replica recorded it first, or it is an old version again: keep the first.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) => return Err(format!("recording version {version}: {e}")),
        }
        self.prune().await
    }

    async fn all(&self) -> Result<Vec<ControllerRevision>, String> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LABEL}={LABEL_VALUE}")))
            .await
            .map_err(|e| format!("listing the config history: {e}"))?;
        let mut items = list.items;
        items.sort_by_key(|r| (r.revision, r.metadata.name.clone()));
        Ok(items)
    }

    async fn prune(&self) -> Result<(), String> {
        let all = self.all().await?;
        for old in all.iter().take(all.len().saturating_sub(KEPT)) {
            let n = old.metadata.name.clone().unwrap_or_default();
            match self.api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(format!("pruning the config history: {e}")),
            }
        }
        Ok(())
    }

    /// Every kept version, oldest first, each with its diff from the one before.
    pub async fn entries(&self) -> Result<Vec<Change>, String> {
        let mut out: Vec<Change> = Vec::new();
        let mut before: Option<Value> = None;
        for r in self.all().await? {
            let data = r.data.map(|d| d.0).unwrap_or_default();
            let version =
                r.metadata.name.as_deref().unwrap_or_default().trim_start_matches("spillway-routing-").to_owned();
            out.push(Change {
                previous: out.last().map(|e| e.version.clone()),
                version,
                who: data["who"].as_str().unwrap_or_default().to_owned(),
                action: data["action"].as_str().unwrap_or_default().to_owned(),
                at_unix_ms: u64::try_from(r.revision).unwrap_or(0),
                diff: config_diff(before.as_ref(), &data["config"]),
            });
            before = Some(data["config"].clone());
        }
        Ok(out)
    }

    /// The base config recorded for `version`.
    pub async fn config(&self, version: &str) -> Result<Option<RoutingConfig>, String> {
        let Some(r) = self.api.get_opt(&name(version)).await.map_err(|e| e.to_string())? else { return Ok(None) };
        let data = r.data.map(|d| d.0).unwrap_or_default();
        load_str(&data["config"].to_string(), &format!("history {version}")).map(Some).map_err(|e| e.to_string())
    }
}
