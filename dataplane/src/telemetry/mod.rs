//! Telemetry: a managed sidecar's `Telemetry.Report` stream (docs/design.md §7).
//!
//! # Layout
//!
//! - [`feedback`]: `POST /v1/feedback`, remembered per (feature, endpoint) until the next report;
//! - this module: every `interval` the sidecar sends what each endpoint did (outcome counts and
//!   HDR histograms, from [`crate::health::interval`]), each pool's tokens used and demanded, and
//!   the feedback sums; it applies what the control plane answers — lease grants (the pool's
//!   budget until the grant lapses, then the grant's conservative fallback) and fleet-wide
//!   breaker directives.
//!
//! Reports are taken only while the stream is up: what happens while the control plane is away
//! is sent in the first report after reconnecting, with its real interval length.

pub mod feedback;

use crate::managed::{Managed, StreamError, channel_to, reconnecting};
use crate::metrics::Metrics;
use crate::routing::{Routing, RoutingTable};
use feedback::Feedback;
use spillway_api::v1::telemetry_client::TelemetryClient;
use spillway_api::v1::{HeldLease, PoolReport, TelemetryReport, TelemetryResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// Everything the reporter needs.
pub struct Reporter {
    pub managed: Arc<Managed>,
    pub routing: Arc<Routing>,
    pub metrics: Arc<Metrics>,
    pub feedback: Arc<Feedback>,
    pub interval: Duration,
    /// Bumped each time a control-plane answer has been applied.
    pub applied: watch::Sender<u64>,
}

/// Runs the reporter forever, reconnecting like the discovery stream.
pub async fn run(r: Reporter) {
    let url = r.managed.url.clone();
    // Outlives each session: the first report after a reconnect covers the whole gap.
    let since = std::sync::Mutex::new(Instant::now());
    // The leader a refusing replica named: the next session goes straight there.
    let leader = std::sync::Mutex::new(None::<String>);
    reconnecting("telemetry", &url, || to_leader(&r, &since, &leader)).await
}

/// One session, to the leader last named or else to the configured URL. A refusal naming
/// another leader is followed; anything else returns to the configured URL (the Service), so a
/// leader that has gone is never chased.
async fn to_leader(
    r: &Reporter,
    since: &std::sync::Mutex<Instant>,
    leader: &std::sync::Mutex<Option<String>>,
) -> Result<(), StreamError> {
    let target = leader.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let url = target.as_deref().unwrap_or(&r.managed.url);
    let result = session(r, since, url).await;
    let next = match &result {
        Err(StreamError::NotLeader { leader: Some(named), .. }) if named != url => r.managed.follow(named),
        _ => None,
    };
    *leader.lock().unwrap_or_else(|p| p.into_inner()) = next;
    result
}

/// The report of everything since `since`, taking it from the table's endpoints and pools.
pub fn report(r: &Reporter, table: &RoutingTable, since: Instant) -> TelemetryReport {
    let endpoints = table.endpoints().filter_map(|e| e.health.take_interval()).collect();
    let pools = table
        .pools
        .values()
        .map(|p| {
            let (used, demanded) = p.take_interval();
            let held = p.held().map(|((epoch, seq), tpm, left)| HeldLease {
                epoch,
                seq,
                tokens_per_minute: tpm,
                valid_for_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            });
            PoolReport { pool: p.name.clone(), tokens_used: used, tokens_demanded: demanded, held }
        })
        .collect();
    TelemetryReport {
        node: Some(r.managed.node.clone()),
        interval_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        endpoints,
        pools,
        feedback: r.feedback.take(),
    }
}

async fn session(r: &Reporter, last: &std::sync::Mutex<Instant>, url: &str) -> Result<(), StreamError> {
    let mut client = TelemetryClient::new(channel_to(&r.managed, url).await?);
    let (tx, rx) = mpsc::channel(2);
    // The first report is sent at once, so the control plane knows this sidecar's pools and can
    // lease it a share before the first interval ends.
    let take = || {
        let mut since = last.lock().unwrap_or_else(|p| p.into_inner());
        let rep = report(r, &r.routing.load(), *since);
        *since = Instant::now();
        rep
    };
    tx.send(take()).await.map_err(|e| e.to_string())?;
    let stream = r.managed.request(ReceiverStream::new(rx))?;
    let mut responses = client.report(stream).await?.into_inner();
    let mut ticks = tokio::time::interval_at(Instant::now() + r.interval, r.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                tx.send(take()).await.map_err(|e| e.to_string())?;
            }
            msg = responses.message() => {
                let Some(resp) = msg? else { return Ok(()) };
                apply(&r.routing.load(), &resp, &r.metrics);
                r.applied.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Applies the control plane's answer to the live table: lease grants to pools, breaker
/// directives to endpoints. Names the table does not know (a snapshot in flight) are skipped.
pub fn apply(table: &RoutingTable, resp: &TelemetryResponse, metrics: &Metrics) {
    for g in &resp.leases {
        match table.pools.get(&g.pool) {
            Some(p) => {
                let stamp = (g.epoch, g.seq);
                let valid_for = Duration::from_millis(g.valid_for_ms);
                if !p.set_lease(g.tokens_per_minute, valid_for, g.fallback_tokens_per_minute, stamp) {
                    tracing::debug!(pool = %g.pool, ?stamp, "an older grant than the one held: ignored");
                }
            }
            None => tracing::debug!(pool = %g.pool, "lease for a pool this table does not have"),
        }
    }
    for d in &resp.directives {
        match table.endpoint(&d.endpoint) {
            Some(e) => e.health.fleet_directive(d.open, Duration::from_millis(d.open_for_ms), &d.reason, metrics),
            None => tracing::debug!(endpoint = %d.endpoint, "directive for an endpoint this table does not have"),
        }
    }
}
