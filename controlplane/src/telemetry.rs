//! `Telemetry.Report`: sidecars stream interval reports up; on every tick the control plane
//! answers each connected sidecar with its PT lease grants and the fleet-wide breaker
//! directives (docs/design.md §7).
//!
//! A report is merged as it arrives (fleet view, pool demand, feedback sums) under short locks;
//! the tick does the fleet-wide work once for everyone: judging the merged breaker windows,
//! dividing every pool, closing feedback windows (a sustained drop demotes through
//! [`ConfigState`]), and fanning the answers out.

use crate::feedback::{FeedbackPolicy, Trends};
use crate::fleet::Fleet;
use crate::leases::{LeaseBook, LeasePolicy};
use crate::state::ConfigState;
use spillway_api::config::RoutingConfig;
use spillway_api::v1::telemetry_server::{Telemetry as TelemetryApi, TelemetryServer};
use spillway_api::v1::{LeaseGrant, TelemetryReport, TelemetryResponse};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Sender = mpsc::Sender<Result<TelemetryResponse, Status>>;

/// Tunables of the fleet-wide work.
#[derive(Debug, Clone)]
pub struct TelemetryPolicy {
    /// How often leases are divided and answers sent.
    pub tick: Duration,
    /// Percentiles in the fleet view cover one to two of these.
    pub period: Duration,
    pub leases: LeasePolicy,
    pub feedback: FeedbackPolicy,
}

impl Default for TelemetryPolicy {
    fn default() -> Self {
        TelemetryPolicy {
            tick: Duration::from_secs(5),
            period: Duration::from_secs(60),
            leases: LeasePolicy::default(),
            feedback: FeedbackPolicy::default(),
        }
    }
}

pub struct Telemetry {
    policy: TelemetryPolicy,
    state: Arc<ConfigState>,
    fleet: Mutex<Fleet>,
    leases: Mutex<LeaseBook>,
    trends: Mutex<Trends>,
    /// One answer channel per connected sidecar; a reconnect replaces the old one.
    streams: Mutex<HashMap<String, (u64, Sender)>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// Counts merged reports and ticks, so tests and tools can wait for one.
    changes: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    pub fn new(state: Arc<ConfigState>, policy: TelemetryPolicy) -> Arc<Telemetry> {
        let now = Instant::now();
        Arc::new(Telemetry {
            fleet: Mutex::new(Fleet::new(policy.period, now)),
            leases: Mutex::new(LeaseBook::new(policy.leases.clone())),
            trends: Mutex::new(Trends::new(policy.feedback.clone())),
            policy,
            state,
            streams: Mutex::new(HashMap::new()),
            next_stream: Default::default(),
            changes: watch::Sender::new(0),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Follows the config in force (breaker policies, pools) and runs the tick, until dropped.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut config = me.state.subscribe();
            let follow = |config: &mut watch::Receiver<Option<Arc<RoutingConfig>>>| {
                let current = config.borrow_and_update().clone();
                if let Some(c) = current {
                    me.set_config(&c);
                }
            };
            follow(&mut config);
            let mut ticks = tokio::time::interval_at(Instant::now() + me.policy.tick, me.policy.tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => me.tick(Instant::now()),
                    changed = config.changed() => match changed {
                        Ok(()) => follow(&mut config),
                        Err(_) => return,
                    },
                }
            }
        })
    }

    pub fn set_config(&self, c: &RoutingConfig) {
        lock(&self.fleet).set_config(c);
        let pools = c.pools.iter().map(|(n, p)| (n.clone(), p.tokens_per_minute()));
        lock(&self.leases).set_pools(pools);
    }

    /// Merges one report. Parts that cannot be merged (unknown endpoint, corrupt histogram) are
    /// skipped and logged; the rest counts.
    pub fn ingest(&self, r: &TelemetryReport, now: Instant) {
        let node = r.node.as_ref().map_or("<unknown>", |n| n.id.as_str());
        let zone = r.node.as_ref().map_or("", |n| n.zone.as_str());
        {
            let mut fleet = lock(&self.fleet);
            for e in &r.endpoints {
                if let Err(err) = fleet.merge(node, zone, e, now) {
                    tracing::debug!(node, endpoint = %e.endpoint, error = %err, "report part skipped");
                }
            }
        }
        if !r.pools.is_empty() {
            let minutes = (r.interval_ms.max(1) as f64) / 60_000.0;
            let mut leases = lock(&self.leases);
            for p in &r.pools {
                // Demand is reported per interval; leases are per minute. A first report right
                // after connecting covers a short interval: at least a second is assumed.
                let tpm = (p.tokens_demanded as f64 / minutes.max(1.0 / 60.0)) as u64;
                leases.report(&p.pool, node, tpm, now);
            }
        }
        if !r.feedback.is_empty() {
            let mut trends = lock(&self.trends);
            for f in &r.feedback {
                trends.record(&f.feature, &f.endpoint, f.count, f.score_sum, now);
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// The fleet-wide work of one tick; see the module docs.
    pub fn tick(&self, now: Instant) {
        let directives = {
            let mut fleet = lock(&self.fleet);
            fleet.evaluate(now);
            fleet.directives(now)
        };
        let mut grants: HashMap<String, Vec<LeaseGrant>> = HashMap::new();
        {
            let mut leases = lock(&self.leases);
            let pools: Vec<String> = leases.pools().cloned().collect();
            for pool in pools {
                for (node, l) in leases.grants(&pool, now) {
                    grants.entry(node).or_default().push(LeaseGrant {
                        pool: pool.clone(),
                        tokens_per_minute: l.tokens_per_minute,
                        valid_for_ms: u64::try_from(l.expires_at.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX),
                        fallback_tokens_per_minute: l.fallback_tpm,
                    });
                }
            }
        }
        let drops = lock(&self.trends).evaluate(now);
        for d in drops {
            if let Some(dem) = self.state.demote(&d.feature, &d.endpoint, &d.reason) {
                tracing::warn!(feature = %d.feature, endpoint = %d.endpoint, id = dem.id, reason = %d.reason, "endpoint demoted on user feedback");
            }
        }
        let streams: Vec<(String, Sender)> =
            lock(&self.streams).iter().map(|(n, (_, tx))| (n.clone(), tx.clone())).collect();
        for (node, tx) in streams {
            let leases = grants.remove(&node).unwrap_or_default();
            if leases.is_empty() && directives.is_empty() {
                continue;
            }
            // A sidecar too slow to read its answers misses this one, not the next.
            let _ = tx.try_send(Ok(TelemetryResponse { leases, directives: directives.clone() }));
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Ends a fleet-wide open now (admin API); `false` if the endpoint was not open.
    pub fn release(&self, endpoint: &str) -> bool {
        lock(&self.fleet).release(endpoint, Instant::now())
    }

    /// Undoes a demotion and restarts the endpoint's feedback trend.
    pub fn undo_demotion(&self, id: u64, who: &str) -> Result<crate::state::Demotion, String> {
        let d = self.state.undo(id, who)?;
        lock(&self.trends).reset(&d.feature, &d.endpoint);
        Ok(d)
    }

    /// The admin API's fleet view: endpoints (overall and per zone), pools, connected sidecars.
    pub fn view(&self) -> serde_json::Value {
        let now = Instant::now();
        let mut v = lock(&self.fleet).view(now);
        let leases = lock(&self.leases);
        let mut pools: Vec<&String> = leases.pools().collect();
        pools.sort();
        v["pools"] = pools
            .into_iter()
            .filter_map(|p| {
                let (budget, n, demand) = leases.summary(p, now)?;
                Some(serde_json::json!({"pool": p, "budget_tpm": budget, "sidecars": n, "demand_tpm": demand,
                    "demand_over_budget": if budget == 0 { 0.0 } else { demand as f64 / budget as f64 }}))
            })
            .collect();
        v["connected_sidecars"] = lock(&self.streams).len().into();
        v
    }

    pub fn feedback_view(&self) -> serde_json::Value {
        let mut v = lock(&self.trends).view();
        v["demotions"] = serde_json::json!(self.state.demotions());
        v
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<TelemetryResponse, Status>> + Send>>;

/// The gRPC service over a shared [`Telemetry`].
#[derive(Clone)]
pub struct TelemetryService(pub Arc<Telemetry>);

impl TelemetryService {
    pub fn server(t: Arc<Telemetry>) -> TelemetryServer<TelemetryService> {
        TelemetryServer::new(TelemetryService(t))
    }
}

#[tonic::async_trait]
impl TelemetryApi for TelemetryService {
    type ReportStream = ResponseStream;

    async fn report(&self, req: Request<Streaming<TelemetryReport>>) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let me = self.0.clone();
        let id = me.next_stream.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut node: Option<String> = None;
            while let Ok(Some(r)) = inbound.message().await {
                if node.is_none()
                    && let Some(n) = r.node.as_ref().filter(|n| !n.id.is_empty())
                {
                    lock(&me.streams).insert(n.id.clone(), (id, tx.clone()));
                    node = Some(n.id.clone());
                }
                me.ingest(&r, Instant::now());
            }
            if let Some(n) = node {
                let mut streams = lock(&me.streams);
                // A reconnect may already have replaced this stream: only remove our own.
                if streams.get(&n).is_some_and(|(i, _)| *i == id) {
                    streams.remove(&n);
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
