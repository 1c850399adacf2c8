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
use crate::identity::{Authenticator, valid_name};
use crate::leases::{Held, LeaseBook, LeasePolicy, Stamp};
use crate::metrics::{Metrics, Refused, Tracked};
use crate::report;
use crate::state::ConfigState;
use spillway_api::config::RoutingConfig;
use spillway_api::v1::telemetry_server::{Telemetry as TelemetryApi, TelemetryServer};
use spillway_api::v1::{LeaseGrant, TelemetryReport, TelemetryResponse};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Sender = mpsc::Sender<Result<TelemetryResponse, Status>>;

/// The leader's state a successor resumes from (`shared` keeps it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaderCheckpoint {
    pub written_unix_ms: u64,
    pub opens: Vec<crate::fleet::OpenCheckpoint>,
    pub trends: Vec<crate::feedback::TrendCheckpoint>,
}

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
    /// (feature, endpoint) pairs the config in force routes: the only feedback taken.
    routed: Mutex<std::collections::HashSet<(String, String)>>,
    metrics: Arc<Metrics>,
    /// One answer channel per connected sidecar; a reconnect replaces the old one.
    streams: Mutex<HashMap<String, (u64, Sender)>>,
    /// The epoch while this replica leads (see `election`); alone, it always leads.
    leading: Mutex<Option<u64>>,
    /// The last leader's checkpoint seen in the shared state, to resume from on taking over.
    inherited: Mutex<Option<LeaderCheckpoint>>,
    /// Where the leader's gRPC server answers, while another replica leads: named in refusals.
    leader_grpc: Mutex<Option<String>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// Zones the fleet had evicted when last looked at, to count new evictions.
    zones_evicted: std::sync::atomic::AtomicUsize,
    /// Counts merged reports and ticks, so tests and tools can wait for one.
    changes: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    pub fn new(state: Arc<ConfigState>, policy: TelemetryPolicy) -> Arc<Telemetry> {
        let now = Instant::now();
        let epoch = crate::ads::now_ms();
        state.metrics().set_leading(Some(epoch));
        Arc::new(Telemetry {
            fleet: Mutex::new(Fleet::new(policy.period, now)),
            // Until leader election, each process is its own epoch; a restarted one a later one.
            leases: Mutex::new(LeaseBook::new(policy.leases.clone(), epoch, now)),
            trends: Mutex::new(Trends::new(policy.feedback.clone())),
            routed: Mutex::default(),
            metrics: state.metrics().clone(),
            policy,
            state,
            streams: Mutex::new(HashMap::new()),
            leading: Mutex::new(Some(epoch)),
            inherited: Mutex::default(),
            leader_grpc: Mutex::default(),
            next_stream: Default::default(),
            zones_evicted: Default::default(),
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
        let routed: std::collections::HashSet<(String, String)> = c
            .features
            .iter()
            .flat_map(|(f, feat)| {
                let twins =
                    feat.hierarchy.iter().filter_map(|e| c.endpoints.get(e)?.capacity.as_ref()?.spill_to.clone());
                feat.hierarchy.iter().cloned().chain(twins).map(move |e| (f.clone(), e))
            })
            .collect();
        let mut trends = lock(&self.trends);
        let evicted = trends.retain(|f, e| routed.contains(&(f.to_owned(), e.to_owned())));
        self.metrics.evicted(Tracked::Feedback, evicted);
        self.metrics.set_tracked(Tracked::Feedback, trends.len());
        *lock(&self.routed) = routed;
    }

    /// Merges one report from sidecar `node` (verified by the stream) filed under `zone`. Parts
    /// that cannot be merged (unknown endpoint, pool or feature, out of bounds, corrupt
    /// histogram) are skipped and counted; the rest counts.
    pub fn ingest(&self, node: &str, zone: &str, r: &TelemetryReport, now: Instant) {
        let interval = report::interval(r.interval_ms);
        {
            let mut fleet = lock(&self.fleet);
            let mut seen = std::collections::HashSet::with_capacity(r.endpoints.len());
            for e in &r.endpoints {
                // An endpoint named twice in one report would count twice.
                let checked = if seen.insert(e.endpoint.as_str()) {
                    report::check_endpoint(e, interval)
                } else {
                    Err(Refused::OutOfBounds)
                };
                let merged = checked.and_then(|()| fleet.merge(node, zone, e, now));
                if let Err(why) = merged {
                    self.metrics.refused(why);
                    tracing::debug!(node, endpoint = %e.endpoint, reason = ?why, "report part skipped");
                }
            }
            let (zones, evicted) = fleet.zone_counts();
            self.metrics.set_tracked(Tracked::Zones, zones);
            self.metrics.evicted(Tracked::Zones, evicted.saturating_sub(self.zones_evicted.swap(evicted, Relaxed)));
        }
        if !r.pools.is_empty() {
            let minutes = interval.as_secs_f64() / 60.0;
            let mut leases = lock(&self.leases);
            for p in &r.pools {
                // Demand is reported per interval; leases are per minute.
                let tpm = (p.tokens_demanded as f64 / minutes) as u64;
                let held = p.held.filter(|h| h.epoch > 0).map(|h| Held {
                    stamp: Stamp { epoch: h.epoch, seq: h.seq },
                    tokens_per_minute: h.tokens_per_minute,
                    valid_for: Duration::from_millis(h.valid_for_ms).min(self.policy.leases.ttl),
                });
                if !leases.report(&p.pool, node, tpm, held, now) {
                    self.metrics.refused(Refused::Unknown);
                }
            }
        }
        if !r.feedback.is_empty() {
            let routed = lock(&self.routed);
            let mut trends = lock(&self.trends);
            for f in &r.feedback {
                let known = routed.contains(&(f.feature.clone(), f.endpoint.clone()));
                let checked = if known { report::check_feedback(f, interval) } else { Err(Refused::Unknown) };
                match checked {
                    Ok(()) => trends.record(&f.feature, &f.endpoint, f.count, f.score_sum, now),
                    Err(why) => self.metrics.refused(why),
                }
            }
            self.metrics.set_tracked(Tracked::Feedback, trends.len());
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Takes leadership in `epoch` (a fresh lease book: what an earlier leader granted is not
    /// known, see `leases`), or gives it up: then every telemetry stream is ended, so its sidecar
    /// reconnects — to the leader, eventually — and nothing more is granted here.
    pub fn set_leading(&self, epoch: Option<u64>) {
        let mut leading = lock(&self.leading);
        if *leading == epoch {
            return;
        }
        *leading = epoch;
        self.metrics.set_leading(epoch);
        if let Some(e) = epoch {
            let pools: Vec<(String, u64)> = self
                .state
                .subscribe()
                .borrow()
                .as_ref()
                .map(|c| c.pools.iter().map(|(n, p)| (n.clone(), p.tokens_per_minute())).collect())
                .unwrap_or_default();
            let mut book = LeaseBook::new(self.policy.leases.clone(), e, Instant::now());
            book.set_pools(pools);
            *lock(&self.leases) = book;
            if let Some(c) = lock(&self.inherited).take() {
                let now = Instant::now();
                let elapsed = Duration::from_millis(crate::ads::now_ms().saturating_sub(c.written_unix_ms));
                lock(&self.fleet).restore(&c.opens, elapsed, now);
                lock(&self.trends).restore(&c.trends, now);
                tracing::info!(
                    opens = c.opens.len(),
                    trends = c.trends.len(),
                    "resuming the previous leader's fleet state"
                );
            }
        } else {
            for (_, (_, tx)) in lock(&self.streams).drain() {
                let _ = tx.try_send(Err(Status::unavailable("this control-plane replica no longer leads; reconnect")));
            }
        }
    }

    /// Follows an election until it ends: this replica leads while it says so, and while
    /// another one leads, refusals name that one's gRPC address.
    pub fn follow(
        self: &Arc<Self>,
        mut leading: crate::election::Leadership,
        mut leader: watch::Receiver<Option<crate::election::Advertised>>,
    ) -> tokio::task::JoinHandle<()> {
        let t = self.clone();
        tokio::spawn(async move {
            loop {
                t.set_leading(*leading.borrow_and_update());
                t.set_leader_address(leader.borrow_and_update().as_ref().map(|a| a.grpc.clone()));
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() { return },
                    changed = leader.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    /// Where the leader's gRPC server answers, as the election says (`None`: not known).
    pub fn set_leader_address(&self, grpc: Option<String>) {
        *lock(&self.leader_grpc) = grpc.filter(|g| !g.is_empty());
    }

    pub fn leader_address(&self) -> Option<String> {
        lock(&self.leader_grpc).clone()
    }

    /// `UNAVAILABLE`, marked so that the sidecar reconnects without backing off, and naming the
    /// leader's address when it is known, so that it reconnects there.
    fn not_leader(&self, message: &str) -> Status {
        let mut meta = tonic::metadata::MetadataMap::new();
        meta.insert(spillway_api::NOT_LEADER, tonic::metadata::MetadataValue::from_static("1"));
        let leader = lock(&self.leader_grpc).clone();
        if let Some(v) = leader.and_then(|l| tonic::metadata::MetadataValue::try_from(l.as_str()).ok()) {
            meta.insert(spillway_api::LEADER, v);
        }
        Status::with_metadata(tonic::Code::Unavailable, message, meta)
    }

    pub fn leading(&self) -> Option<u64> {
        *lock(&self.leading)
    }

    /// What the next leader needs to carry on: fleet-wide opens and feedback baselines.
    pub fn checkpoint(&self) -> LeaderCheckpoint {
        let now = Instant::now();
        LeaderCheckpoint {
            written_unix_ms: crate::ads::now_ms(),
            opens: lock(&self.fleet).checkpoint(now),
            trends: lock(&self.trends).checkpoint(),
        }
    }

    /// The checkpoint this replica would resume from if it took over now.
    pub fn inherited(&self) -> Option<LeaderCheckpoint> {
        lock(&self.inherited).clone()
    }

    /// A leader's checkpoint seen in the shared state, kept for the day this replica leads.
    pub fn observe_checkpoint(&self, c: LeaderCheckpoint) {
        *lock(&self.inherited) = Some(c);
    }

    /// The fleet-wide work of one tick; see the module docs. Only the leader does it.
    pub fn tick(&self, now: Instant) {
        if self.leading().is_none() {
            return;
        }
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
                        epoch: l.stamp.epoch,
                        seq: l.stamp.seq,
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

/// The gRPC service over a shared [`Telemetry`]; every stream is authenticated first.
#[derive(Clone)]
pub struct TelemetryService(pub Arc<Telemetry>, pub Arc<Authenticator>);

impl TelemetryService {
    pub fn server(t: Arc<Telemetry>, auth: Arc<Authenticator>) -> TelemetryServer<TelemetryService> {
        TelemetryServer::new(TelemetryService(t, auth))
    }
}

#[tonic::async_trait]
impl TelemetryApi for TelemetryService {
    type ReportStream = ResponseStream;

    async fn report(&self, req: Request<Streaming<TelemetryReport>>) -> Result<Response<ResponseStream>, Status> {
        if self.0.leading().is_none() {
            // The sidecar reconnects at once: to the leader named, else through the Service again.
            return Err(self.0.not_leader("this control-plane replica does not lead; reconnect"));
        }
        let mut peer = self.1.authenticate(req.metadata()).await?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let me = self.0.clone();
        let id = me.next_stream.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let mut node: Option<String> = None;
            while let Ok(Some(r)) = inbound.message().await {
                if me.leading().is_none() {
                    let _ = tx.send(Err(me.not_leader("this control-plane replica no longer leads; reconnect"))).await;
                    break;
                }
                let declared = r.node.clone().unwrap_or_default();
                let refused = match peer.check_declared(&declared.id) {
                    Err(s) => Some(s),
                    Ok(()) if peer.node_id.is_empty() => Some(Status::invalid_argument("a report must name its node")),
                    Ok(()) => None,
                };
                if let Some(status) = refused {
                    tracing::warn!(node = %peer.node_id, declared = %declared.id, "telemetry stream refused: {}", status.message());
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                if node.is_none() {
                    lock(&me.streams).insert(peer.node_id.clone(), (id, tx.clone()));
                    node = Some(peer.node_id.clone());
                }
                // A verified zone wins; a declared one is only a label, and must look like one.
                let zone = peer.zone(&declared.zone);
                let zone = if zone.is_empty() { "" } else { valid_name("zone", zone).unwrap_or("") };
                me.ingest(&peer.node_id, zone, &r, Instant::now());
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
