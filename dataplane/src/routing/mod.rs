//! The live routing table: features resolved to ready-to-use endpoints.
//!
//! A [`RoutingTable`] is immutable. A new config builds a whole new table, checked end to end,
//! and [`Routing::swap`] publishes it atomically: a request sees the old table or the new one,
//! never a mix, and a config that fails to build leaves the old table serving.

pub mod load;
pub mod watch;

use crate::capacity::Pool;
use crate::health::Health;
use crate::upstream::provider::Upstream;
use crate::upstream::secrets::SecretPolicy;
use arc_swap::ArcSwap;
use spillway_api::config::{
    BreakerPolicy, ConfigError, ConfigErrors, Endpoint, FeatureClass, HedgeAfter, RetryBudget, RoutingConfig,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One endpoint, ready to send to.
pub struct EndpointTarget {
    pub name: Arc<str>,
    pub spec: Endpoint,
    pub upstream: Upstream,
    /// The breaker policy the features using this endpoint name, if any.
    pub policy: Option<BreakerPolicy>,
    pub health: Health,
    /// The name as the `x-spillway-endpoint` value, checked once (`None`: not a valid header value).
    pub name_header: Option<http::HeaderValue>,
}

/// One tier of a feature's hierarchy with its capacity: the PT pool it draws from and the
/// on-demand twin that takes its overflow.
pub struct Tier {
    pub target: Arc<EndpointTarget>,
    pub pool: Option<Arc<Pool>>,
    pub spill_to: Option<Arc<EndpointTarget>>,
}

pub struct FeatureRoute {
    pub name: Arc<str>,
    pub class: FeatureClass,
    pub boundary: Vec<String>,
    pub hierarchy: Vec<Arc<EndpointTarget>>,
    pub tiers: Vec<Tier>,
    pub deadline: Duration,
    pub attempt_timeout: Option<Duration>,
    /// Whether a translation may drop fields that only tune the answer.
    pub translation: spillway_api::config::Translation,
    pub hedge: Option<HedgeAfter>,
    pub hedge_tool_results: bool,
    /// Hedges racing at once: at most this share of the feature's requests in flight.
    pub hedge_max_share: f64,
    /// Requests in flight and hedges racing, for the hedge bound.
    pub load: Arc<load::Load>,
    /// The feature's typical output tokens, for estimates of requests that name no limit.
    pub output_avg: Arc<crate::capacity::Average>,
    /// The metrics a served request moves, per endpoint.
    pub served: crate::metrics::ServedCache,
}

pub struct RoutingTable {
    /// Content hash of the config the table was built from.
    pub version: String,
    pub retry_budget: RetryBudget,
    pub features: HashMap<String, Arc<FeatureRoute>>,
    pub pools: HashMap<String, Arc<Pool>>,
    endpoints: HashMap<String, Arc<EndpointTarget>>,
}

impl RoutingTable {
    /// Builds a table from a validated config. Endpoints whose spec is unchanged from `previous`
    /// are carried over with their connection pools.
    pub fn build(
        config: &RoutingConfig,
        version: String,
        source: &str,
        previous: Option<&RoutingTable>,
        secrets: &SecretPolicy,
    ) -> Result<Self, ConfigErrors> {
        let mut problems = Vec::new();
        let mut endpoints = HashMap::new();
        for (name, spec) in &config.endpoints {
            // Validation guarantees the features sharing an endpoint agree on its policy.
            let policy = config
                .features
                .values()
                .filter(|f| f.hierarchy.contains(name))
                .find_map(|f| f.breaker.as_ref())
                .and_then(|b| config.breakers.get(b))
                .cloned();
            // An unchanged endpoint keeps its connections and its breaker's history (one without
            // credentials is built again: a key file may have appeared since).
            if let Some(old) = previous
                .and_then(|p| p.endpoints.get(name))
                .filter(|old| old.spec == *spec && old.policy == policy && old.upstream.missing_credential().is_none())
            {
                endpoints.insert(name.clone(), old.clone());
                continue;
            }
            match target(name, spec, policy, secrets) {
                Ok(t) => {
                    if let Some(why) = t.upstream.missing_credential() {
                        tracing::warn!(endpoint = %name, reason = why, "endpoint has no credentials: it is skipped until a config reload finds them");
                    }
                    endpoints.insert(name.clone(), Arc::new(t));
                }
                Err((path, message)) => problems.push(ConfigError {
                    file: source.to_owned(),
                    path: format!("endpoints.{name}{path}"),
                    message,
                }),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        // An unchanged pool keeps its accounting across reloads.
        let pools: HashMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, spec)| {
                let kept = previous.and_then(|p| p.pools.get(name)).filter(|p| p.spec == *spec).cloned();
                (name.clone(), kept.unwrap_or_else(|| Arc::new(Pool::new(name, spec))))
            })
            .collect();
        let features = config
            .features
            .iter()
            .map(|(name, f)| {
                let tiers = f
                    .hierarchy
                    .iter()
                    .filter_map(|e| {
                        let target = endpoints.get(e)?.clone();
                        let cap = target.spec.capacity.as_ref();
                        let pool = cap.and_then(|c| pools.get(&c.pool)).cloned();
                        let spill_to = cap.and_then(|c| c.spill_to.as_ref()).and_then(|s| endpoints.get(s)).cloned();
                        Some(Tier { target, pool, spill_to })
                    })
                    .collect();
                let route = FeatureRoute {
                    name: name.as_str().into(),
                    class: f.class,
                    boundary: f.boundary.clone(),
                    tiers,
                    // Validation guarantees every hierarchy entry names an endpoint.
                    hierarchy: f.hierarchy.iter().filter_map(|e| endpoints.get(e).cloned()).collect(),
                    deadline: Duration::from_millis(f.deadline_ms),
                    attempt_timeout: f.attempt_timeout_ms.map(Duration::from_millis),
                    translation: f.translation,
                    hedge: f.hedge_after_ttft_ms.clone(),
                    hedge_tool_results: f.hedge_tool_results,
                    hedge_max_share: f.hedge_max_share,
                    load: previous
                        .and_then(|p| p.features.get(name))
                        .map_or_else(Default::default, |old| old.load.clone()),
                    output_avg: previous
                        .and_then(|p| p.features.get(name))
                        .map_or_else(|| Arc::new(crate::capacity::Average::new()), |old| old.output_avg.clone()),
                    served: Default::default(),
                };
                (name.clone(), Arc::new(route))
            })
            .collect();
        Ok(RoutingTable { version, retry_budget: config.retry_budget.clone(), features, pools, endpoints })
    }

    /// A table with no features, for a managed sidecar that has no snapshot yet (not ready).
    pub fn empty() -> Self {
        RoutingTable {
            version: String::new(),
            retry_budget: RetryBudget::default(),
            features: HashMap::new(),
            pools: HashMap::new(),
            endpoints: HashMap::new(),
        }
    }

    /// Every endpoint, by name.
    pub fn endpoint(&self, name: &str) -> Option<&Arc<EndpointTarget>> {
        self.endpoints.get(name)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<EndpointTarget>> {
        let mut all: Vec<&Arc<EndpointTarget>> = self.endpoints.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.into_iter()
    }

    pub fn feature_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.features.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn target(
    name: &str,
    spec: &Endpoint,
    policy: Option<BreakerPolicy>,
    secrets: &SecretPolicy,
) -> Result<EndpointTarget, (&'static str, String)> {
    let upstream = Upstream::new(spec, secrets).map_err(|e| (".auth", e))?;
    let name: Arc<str> = name.into();
    let health = Health::new(name.clone(), policy.clone());
    let name_header = http::HeaderValue::from_str(&name).ok();
    Ok(EndpointTarget { name, spec: spec.clone(), upstream, policy, health, name_header })
}

/// Counts of config reloads, and why the last rejected one was rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    pub applied: u64,
    pub rejected: u64,
    pub last_error: Option<String>,
}

/// The table requests read, swappable while they run.
pub struct Routing {
    current: ArcSwap<RoutingTable>,
    status: tokio::sync::watch::Sender<ReloadStatus>,
}

impl Routing {
    pub fn new(table: RoutingTable) -> Self {
        Routing {
            current: ArcSwap::from_pointee(table),
            status: tokio::sync::watch::Sender::new(ReloadStatus::default()),
        }
    }

    pub fn load(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    pub fn swap(&self, table: RoutingTable) {
        self.current.store(Arc::new(table));
        self.status.send_modify(|s| {
            s.applied += 1;
            s.last_error = None;
        });
    }

    /// Records a config that was not applied; the current table keeps serving.
    pub fn reject(&self, error: String) {
        self.status.send_modify(|s| {
            s.rejected += 1;
            s.last_error = Some(error);
        });
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.borrow().clone()
    }

    /// Fires after every reload, applied or rejected: lets tests and operators wait for one
    /// instead of guessing how long it takes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }
}
