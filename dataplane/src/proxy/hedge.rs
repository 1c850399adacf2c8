//! Hedging: when a stream's first token is late, the next tier is raced against it. The first
//! attempt to produce a token wins; the other is dropped, which closes its upstream request.
//!
//! A hedge is not a retry: both attempts are alive at once, so each feature bounds its racing
//! hedges to a share of its requests in flight (`routing::load`), and a hedge aimed at a failing
//! endpoint asks the retry budget too.

use super::RequestCtx;
use super::attempt::Reply;
use super::plan::Planned;
use crate::AppState;
use crate::outcome::Outcome;
use crate::routing::EndpointTarget;
use crate::routing::load::Racing;
use crate::upstream::failure::AttemptFailure;
use spillway_api::config::HedgeAfter;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;

/// An attempt's result, and whether the breaker already counted it as slow in flight.
pub(super) type Attempted = (Result<Reply, AttemptFailure>, bool);

/// How a race between a late attempt and its hedge ended.
pub(super) enum Race {
    /// The first attempt produced a token first.
    First(Attempted),
    /// The hedge did.
    Second(Attempted),
    /// Neither did: both failed, each with its own failure to account for.
    BothFailed(Attempted, Attempted),
}

/// Polls both until one succeeds or both have failed.
pub(super) async fn race<A, B>(mut a: Pin<&mut A>, mut b: Pin<&mut B>) -> Race
where
    A: Future<Output = Attempted>,
    B: Future<Output = Attempted>,
{
    let (mut first, mut second) = (None, None);
    loop {
        tokio::select! {
            r = a.as_mut(), if first.is_none() => {
                if r.0.is_ok() { return Race::First(r) }
                first = Some(r);
            }
            r = b.as_mut(), if second.is_none() => {
                if r.0.is_ok() { return Race::Second(r) }
                second = Some(r);
            }
        }
        match (first.take(), second.take()) {
            (Some(f), Some(s)) => return Race::BothFailed(f, s),
            (f, s) => (first, second) = (f, s),
        }
    }
}

/// Starts a hedge if the feature's hedge bound has room, and — when the hedge goes to a failing
/// endpoint — the retry budget too.
pub(super) fn start(state: &AppState, ctx: &RequestCtx, next: &Planned) -> Option<Racing> {
    let Some(racing) = ctx.feature.load.try_hedge(ctx.feature.hedge_max_share) else {
        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::HedgeRefused);
        return None;
    };
    if next.target.health.failing() && !state.budget().try_retry(Instant::now(), &ctx.retry_budget) {
        state.metrics.attempt(&ctx.feature.name, &next.target.name, Outcome::SkippedRetryBudget);
        return None;
    }
    Some(racing)
}

/// When to race the next tier: a fixed time, or the endpoint's own first-token percentile
/// (no hedge until it has enough samples to know it).
pub(super) fn delay(h: &HedgeAfter, target: &EndpointTarget) -> Option<std::time::Duration> {
    match h {
        HedgeAfter::Millis(ms) => Some(std::time::Duration::from_millis(*ms)),
        HedgeAfter::Percentile(p) => {
            let q = p.strip_prefix('p').and_then(|n| n.parse::<f64>().ok())? / 100.0;
            target.health.ttft_quantile(q)
        }
    }
}
