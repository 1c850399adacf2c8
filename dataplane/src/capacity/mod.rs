//! Capacity: provisioned-throughput pools with on-demand spillover (docs/design.md §6).
//!
//! # Layout
//!
//! - [`ledger`]: one pool's token accounting (estimates in flight, real usage over a minute);
//! - this module: the pools of a routing table, and the spillover decision the planner makes.
//!
//! Spillover is not fallback: it moves a request from a healthy but full PT endpoint to its
//! on-demand twin, before sending (proactive, the pool is at its spill point) or after a
//! throttle (reactive). Failures go through breakers and the hierarchy instead.

pub mod ledger;

use ledger::{Charge, Lease, Ledger};
use serde_json::{Value, json};
use spillway_api::config::Pool as PoolSpec;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Why an attempt is on an on-demand twin instead of its PT endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spill {
    /// The pool was at its spill point before sending.
    Proactive,
    /// The PT endpoint answered with a throttle.
    Throttled,
}

impl Spill {
    pub fn as_str(self) -> &'static str {
        match self {
            Spill::Proactive => "proactive",
            Spill::Throttled => "throttled",
        }
    }
}

pub struct Pool {
    pub name: String,
    pub spec: PoolSpec,
    ledger: Mutex<Ledger>,
    spilled_proactive: AtomicU64,
    spilled_throttled: AtomicU64,
    sent: AtomicU64,
    /// Since the last telemetry report: tokens used, and tokens wanted (used + spilled estimates).
    interval_used: AtomicU64,
    interval_demand: AtomicU64,
}

impl Pool {
    /// A pool owned whole by this sidecar (standalone); a lease replaces the budget later.
    pub fn new(name: &str, spec: &PoolSpec) -> Self {
        let budget = spec.tokens_per_minute();
        Pool {
            name: name.to_owned(),
            spec: spec.clone(),
            ledger: Mutex::new(Ledger::new(budget, Instant::now())),
            spilled_proactive: AtomicU64::new(0),
            spilled_throttled: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            interval_used: AtomicU64::new(0),
            interval_demand: AtomicU64::new(0),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces this sidecar's budget with the control plane's lease of the pool (tokens per
    /// minute), valid for `valid_for`; then `fallback_tpm` until a new grant comes.
    /// Takes a grant unless a later one is held (see `Ledger::set_lease`).
    pub fn set_lease(&self, tpm: u64, valid_for: std::time::Duration, fallback_tpm: u64, stamp: (u64, u64)) -> bool {
        let lease = Lease { until: Instant::now() + valid_for, fallback_tpm, stamp };
        self.ledger().set_lease(tpm, lease)
    }

    /// The grant held now, still valid, for the report: `(stamp, tokens per minute, valid for)`.
    pub fn held(&self) -> Option<((u64, u64), u64, std::time::Duration)> {
        let l = self.ledger();
        let lease = l.lease()?;
        let left = lease.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (lease.stamp, l.leased_tpm(), left))
    }

    /// Takes `(tokens used, tokens demanded)` since the last report.
    pub fn take_interval(&self) -> (u64, u64) {
        (self.interval_used.swap(0, Ordering::Relaxed), self.interval_demand.swap(0, Ordering::Relaxed))
    }

    /// Whether the pool is at its spill point: the next PT-eligible request goes on-demand.
    pub fn full(&self) -> bool {
        self.ledger().utilisation(Instant::now()) >= self.spec.spill_at_utilisation
    }

    pub fn charge(&self, estimate: u64) -> Charge {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.ledger().charge(Instant::now(), estimate)
    }

    pub fn settle(&self, charge: Charge, actual: u64) {
        self.interval_used.fetch_add(actual, Ordering::Relaxed);
        self.interval_demand.fetch_add(actual, Ordering::Relaxed);
        self.ledger().settle(Instant::now(), charge, actual);
    }

    pub fn release(&self, charge: Charge) {
        self.ledger().release(Instant::now(), charge);
    }

    /// A request of `estimate` tokens wanted this pool and went on-demand instead.
    pub fn spilled(&self, why: Spill, estimate: u64) {
        self.interval_demand.fetch_add(estimate, Ordering::Relaxed);
        let c = match why {
            Spill::Throttled => &self.spilled_throttled,
            Spill::Proactive => &self.spilled_proactive,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn utilisation(&self) -> f64 {
        self.ledger().utilisation(Instant::now())
    }

    /// `(utilisation, tokens charged, tokens actually used)` for metrics.
    pub fn figures(&self) -> (f64, u64, u64, f64) {
        let l = self.ledger();
        let (p, t, s) = (
            self.spilled_proactive.load(Ordering::Relaxed),
            self.spilled_throttled.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        );
        let ratio = if p + t + s == 0 { 0.0 } else { (p + t) as f64 / (p + t + s) as f64 };
        (l.utilisation(Instant::now()), l.charged_total, l.actual_total, ratio)
    }

    /// `/debug/pools` and metrics: utilisation, budget, charged vs actual tokens, spillover.
    pub fn debug(&self) -> Value {
        let l = self.ledger();
        let (p, t, s) = (
            self.spilled_proactive.load(Ordering::Relaxed),
            self.spilled_throttled.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        );
        let total = p + t + s;
        let now = Instant::now();
        let lease = l.lease().map(|lease| {
            json!({"valid_for_s": lease.until.saturating_duration_since(now).as_secs_f64(),
                "lapsed": now >= lease.until, "fallback_tpm": lease.fallback_tpm})
        });
        json!({"pool": self.name, "budget_tpm": l.budget(now), "lease": lease, "utilisation": l.utilisation(Instant::now()),
            "spill_at": self.spec.spill_at_utilisation, "tokens_charged": l.charged_total, "tokens_actual": l.actual_total,
            "sent_to_pt": s, "spilled": {"proactive": p, "throttled": t},
            "spill_ratio": if total == 0 { 0.0 } else { (p + t) as f64 / total as f64 }})
    }
}

/// A running average (exponentially weighted) of a feature's output tokens, so a request that
/// names no limit is estimated from what the feature's replies usually cost.
pub struct Average(AtomicU64);

impl Average {
    /// Before any reply is seen: a middling answer.
    pub const INITIAL: u64 = 256;

    pub fn new() -> Self {
        Average(AtomicU64::new(Self::INITIAL))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn record(&self, tokens: u64) {
        // new = 7/8 old + 1/8 sample; a lost race drops one sample, which an average can afford.
        let old = self.get();
        let _ = self.0.compare_exchange(old, (old * 7 + tokens) / 8, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl Default for Average {
    fn default() -> Self {
        Self::new()
    }
}

/// A rough token count of a request body: about four bytes a token for the prompt, plus the
/// output it may produce. Real usage corrects it when the response ends.
pub fn estimate(body_len: usize, max_output: Option<u64>, typical_output: u64) -> u64 {
    (body_len as u64).div_ceil(4) + max_output.unwrap_or(typical_output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_use_the_limit_or_the_features_typical_output() {
        assert_eq!(estimate(400, Some(50), 256), 150, "100 prompt tokens + the caller's limit");
        assert_eq!(estimate(401, None, 256), 357, "rounded up, plus the typical output");
        let avg = Average::new();
        assert_eq!(avg.get(), Average::INITIAL);
        for _ in 0..40 {
            avg.record(40);
        }
        assert!((40..=45).contains(&avg.get()), "converges on what replies cost: {}", avg.get());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_is_full_at_its_spill_point_and_a_lease_replaces_its_budget() {
        let spec = PoolSpec { model_units: 2, tokens_per_minute_per_unit: 500, spill_at_utilisation: 0.9 };
        let pool = Pool::new("p", &spec);
        // A pool with a history, so its rate is over the whole five seconds.
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        // 1,000 tokens a minute: 74 in the last five seconds is a rate of 888 a minute.
        let c = pool.charge(74);
        assert!(!pool.full(), "888 of 1000");
        let d = pool.charge(1);
        assert!(pool.full(), "900 of 1000 is the spill point");
        pool.set_lease(2000, std::time::Duration::from_secs(30), 500, (1, 1));
        assert!(!pool.full(), "a larger lease makes room");
        pool.release(c);
        pool.release(d);
        assert_eq!(pool.utilisation(), 0.0);
    }
}
