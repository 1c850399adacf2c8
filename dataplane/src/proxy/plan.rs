//! The plan: which endpoints of a feature's hierarchy this request may try, in order.
//!
//! Endpoints whose breaker is OPEN are skipped and PARTIAL-OPEN ones are admitted for their ramp
//! share. When the breakers leave nothing, the request still gets one try, at the endpoint that
//! failed longest ago: failing without trying would turn a fleet-wide blip into an outage.

use crate::metrics::Metrics;
use crate::routing::EndpointTarget;
use std::sync::Arc;

pub fn plan<'a>(hierarchy: &'a [Arc<EndpointTarget>], metrics: &Metrics) -> Vec<&'a Arc<EndpointTarget>> {
    let admitted: Vec<&Arc<EndpointTarget>> = hierarchy.iter().filter(|t| t.health.admit(metrics)).collect();
    if !admitted.is_empty() {
        return admitted;
    }
    // `None` (never failed) sorts before any time, so an endpoint that never failed goes first.
    hierarchy.iter().min_by_key(|t| t.health.last_failure()).into_iter().collect()
}
