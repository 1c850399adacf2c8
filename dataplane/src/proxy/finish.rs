//! The end of a request, recorded exactly once: its metrics, its endpoint's health, its PT
//! charge settled or released, feedback eligibility, and the access log line.

use super::RequestCtx;
use super::plan::Planned;
use crate::AppState;
use crate::capacity::ledger::Charge;
use crate::capacity::{Pool, Spill};
use crate::health::breaker::Observation;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::routing::{EndpointTarget, load};
use std::sync::Arc;
use tokio::time::Instant;

/// Records a request's end exactly once: metrics, the endpoint's health, and the access log line.
pub struct Finish {
    pub(super) metrics: Arc<Metrics>,
    pub(super) feature: Arc<str>,
    pub target: Arc<EndpointTarget>,
    pub(super) request_id: String,
    pub(super) started: Instant,
    /// When this attempt began, and (streams only) its time to first token once known.
    pub(super) attempt_started: Instant,
    pub(super) ttft: Option<std::time::Duration>,
    /// The breaker already counted this attempt as slow while it waited for a first token.
    pub(super) counted_in_flight: bool,
    /// The longest pause between two events of the stream (set by the stream body).
    pub max_gap: Option<std::time::Duration>,
    /// Tokens the reply reported using (set when the reply or the stream says).
    pub usage: Option<crate::canonical::Usage>,
    /// The PT charge this attempt holds: settled with real usage on success, released otherwise.
    pub(super) charge: Option<(Arc<Pool>, Charge)>,
    pub(super) spilled: Option<Spill>,
    /// The committed attempt carries the request's place among the feature's requests in flight
    /// until its reply ends.
    pub(super) in_flight: Option<load::InFlight>,
    /// The feature's typical output, for the next requests' estimates.
    pub(super) output_avg: Arc<crate::capacity::Average>,
    pub(super) attempts: usize,
    /// Managed mode: an answered request may be rated with `POST /v1/feedback`.
    pub(super) feedback: Option<Arc<crate::telemetry::feedback::Feedback>>,
    /// The series a success moves, resolved once per feature and endpoint.
    pub(super) served: crate::metrics::Served,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some((pool, charge)) = self.charge.take() {
            pool.release(charge);
        }
    }
}

impl Finish {
    pub fn done(mut self, outcome: Outcome) {
        let ok = outcome == Outcome::Ok;
        if let Some(u) = self.usage.filter(|_| ok) {
            self.output_avg.record(u.output_tokens);
        }
        if let Some(f) = self.feedback.as_ref().filter(|_| ok) {
            f.served(&self.request_id, &self.feature, &self.target.name);
        }
        if let Some((pool, charge)) = self.charge.take() {
            if ok {
                let actual = self.usage.map_or(charge.estimate, |u| u.total());
                pool.settle(charge, actual);
            } else {
                pool.release(charge);
            }
        }
        let elapsed = self.started.elapsed();
        if outcome == Outcome::ClientCancelled {
            self.target.health.record_cancelled(self.attempt_started.elapsed());
        } else {
            let o = Observation {
                failed: outcome.is_failure(),
                throttled: false,
                ttft: self.ttft,
                total: self.attempt_started.elapsed(),
                max_gap: self.max_gap,
                output_tokens: self.usage.map(|u| u.output_tokens),
            };
            self.target.health.record(&o, outcome.class(), self.counted_in_flight, &self.metrics);
        }
        if ok {
            self.served.record(elapsed);
        } else {
            self.metrics.latency(&self.feature, &self.target.name, outcome, elapsed);
            self.metrics.attempt(&self.feature, &self.target.name, outcome);
            self.metrics.request(&self.feature, outcome.as_str());
        }
        crate::log::access::record(&crate::log::access::Record {
            request_id: &self.request_id,
            feature: &self.feature,
            endpoint: &self.target.name,
            attempts: self.attempts,
            outcome: outcome.as_str(),
            elapsed,
        });
    }
}

pub(super) fn new_finish(state: &AppState, ctx: &RequestCtx, p: &Planned, estimate: u64, attempts: usize) -> Finish {
    let charge = p.pool.as_ref().map(|pool| (pool.clone(), pool.charge(estimate)));
    Finish {
        metrics: state.metrics.clone(),
        feature: ctx.feature.name.clone(),
        target: p.target.clone(),
        request_id: ctx.id.clone(),
        started: ctx.started,
        attempt_started: Instant::now(),
        ttft: None,
        counted_in_flight: false,
        max_gap: None,
        usage: None,
        charge,
        spilled: p.spilled,
        in_flight: None,
        output_avg: ctx.feature.output_avg.clone(),
        attempts,
        feedback: state.feedback.clone(),
        served: ctx.feature.served.get(&p.target.name, || state.metrics.served(&ctx.feature.name, &p.target.name)),
    }
}

/// The end of a request no [`Finish`] records — refused, unknown, every endpoint failed, or
/// answered in one body (token counts, embeddings): its count by `label` and its access line,
/// so that every request has one. `endpoint` is `-` when none answered.
pub(crate) fn record_end(
    state: &AppState,
    id: &str,
    feature: &Arc<str>,
    endpoint: &str,
    attempts: usize,
    label: &'static str,
    started: Instant,
) {
    state.metrics.request(feature, label);
    crate::log::access::record(&crate::log::access::Record {
        request_id: id,
        feature,
        endpoint,
        attempts,
        outcome: label,
        elapsed: started.elapsed(),
    });
}
