//! The plan: which endpoints of a feature's hierarchy this request may try, in order.
//!
//! Per tier, capacity first: a `batch` feature goes straight to a PT endpoint's on-demand twin
//! (it never consumes provisioned throughput), and an `interactive` one spills to the twin when
//! the pool is at its spill point. Then health: endpoints whose breaker is OPEN are skipped and
//! PARTIAL-OPEN ones are admitted for their ramp share. When the breakers leave nothing, the
//! request still gets one try, at the endpoint that failed longest ago: failing without trying
//! would turn a fleet-wide blip into an outage.

use crate::capacity::Pool;
use crate::metrics::Metrics;
use crate::routing::{EndpointTarget, FeatureRoute};
use spillway_api::config::FeatureClass;
use std::sync::Arc;

/// One planned attempt.
#[derive(Clone)]
pub struct Planned {
    pub target: Arc<EndpointTarget>,
    /// The PT pool this attempt is charged to.
    pub pool: Option<Arc<Pool>>,
    /// Where a throttled PT attempt is re-sent.
    pub spill_to: Option<Arc<EndpointTarget>>,
    /// Why this attempt is on an on-demand twin: `proactive` or `throttled`.
    pub spilled: Option<&'static str>,
}

/// `estimate`: the request's expected tokens, counted as demand on a pool it spills from.
pub fn plan(feature: &FeatureRoute, estimate: u64, metrics: &Metrics) -> Vec<Planned> {
    let mut out = Vec::new();
    for tier in &feature.tiers {
        let planned = match (&tier.pool, &tier.spill_to, feature.class) {
            (Some(_), Some(twin), FeatureClass::Batch) => {
                Planned { target: twin.clone(), pool: None, spill_to: None, spilled: None }
            }
            (Some(_), None, FeatureClass::Batch) => continue,
            (Some(pool), Some(twin), FeatureClass::Interactive) if pool.full() => {
                pool.spilled("proactive", estimate);
                metrics.spilled(&pool.name, "proactive");
                Planned { target: twin.clone(), pool: None, spill_to: None, spilled: Some("proactive") }
            }
            (pool, twin, _) => {
                Planned { target: tier.target.clone(), pool: pool.clone(), spill_to: twin.clone(), spilled: None }
            }
        };
        if planned.target.health.admit(metrics) {
            out.push(planned);
        }
    }
    if out.is_empty() {
        // `None` (never failed) sorts before any time, so an endpoint that never failed goes first.
        if let Some(t) = feature.hierarchy.iter().min_by_key(|t| t.health.last_failure()) {
            out.push(Planned { target: t.clone(), pool: None, spill_to: None, spilled: None });
        }
    }
    out
}
