//! The plan: which endpoints of a feature's hierarchy this request may try, in order.
//!
//! Per tier, capacity first: a `batch` feature goes straight to a PT endpoint's on-demand twin
//! (it never consumes provisioned throughput), and an `interactive` one spills to the twin when
//! the pool is at its spill point. Then health: endpoints whose breaker is OPEN are skipped and
//! PARTIAL-OPEN ones are admitted for their ramp share.
//!
//! Nothing is left out for good, though: a request fails only when nothing could take it. After
//! the admitted tiers come the on-demand twins of PT tiers the breakers skipped (the same model,
//! bought by the token), and last the endpoints the breakers held back, the one that failed
//! longest ago first. Failing without trying would turn a blip into an outage; the retry budget,
//! not the plan, bounds how much load such last resorts add.

use crate::capacity::{Pool, Spill};
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
    /// Why this attempt is on an on-demand twin.
    pub spilled: Option<Spill>,
    /// Held back by its breaker: tried only when everything before it failed.
    pub last_resort: bool,
}

impl Planned {
    /// An attempt at `target` alone: no pool, no twin.
    pub fn plain(target: Arc<EndpointTarget>) -> Self {
        Planned { target, pool: None, spill_to: None, spilled: None, last_resort: false }
    }

    /// Capacity relief (a spill to an on-demand twin), never refused by the retry budget.
    pub fn spill(target: Arc<EndpointTarget>, why: Spill) -> Self {
        Planned { spilled: Some(why), ..Planned::plain(target) }
    }
}

/// `estimate`: the request's expected tokens, counted as demand on a pool it spills from.
pub fn plan(feature: &FeatureRoute, estimate: u64, metrics: &Metrics) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut twins = Vec::new();
    let mut held_back: Vec<Arc<EndpointTarget>> = Vec::new();
    for tier in &feature.tiers {
        let planned = match (&tier.pool, &tier.spill_to, feature.class) {
            (Some(_), Some(twin), FeatureClass::Batch) => Planned::plain(twin.clone()),
            (Some(_), None, FeatureClass::Batch) => continue,
            (Some(pool), Some(twin), FeatureClass::Interactive) if pool.full() => {
                pool.spilled(Spill::Proactive, estimate);
                metrics.spilled(&pool.name, Spill::Proactive);
                Planned::spill(twin.clone(), Spill::Proactive)
            }
            (pool, twin, _) => {
                Planned { pool: pool.clone(), spill_to: twin.clone(), ..Planned::plain(tier.target.clone()) }
            }
        };
        if planned.target.health.admit(metrics) {
            out.push(planned);
        } else {
            if let Some(twin) = &planned.spill_to {
                twins.push(twin.clone());
            }
            held_back.push(planned.target);
        }
    }
    for twin in twins {
        if !planned_already(&out, &twin) && twin.health.admit(metrics) {
            out.push(Planned::plain(twin));
        }
    }
    // `None` (never failed) sorts before any time, so an endpoint that never failed goes first.
    held_back.sort_by_key(|t| t.health.last_failure());
    for t in held_back {
        if !planned_already(&out, &t) {
            out.push(Planned { last_resort: true, ..Planned::plain(t) });
        }
    }
    out
}

fn planned_already(plan: &[Planned], t: &Arc<EndpointTarget>) -> bool {
    plan.iter().any(|p| Arc::ptr_eq(&p.target, t))
}
