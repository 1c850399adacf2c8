//! Provisioned-throughput leases: each pool's tokens per minute divided among the sidecars that
//! use it, in proportion to the demand they report, with a floor for every live sidecar and a
//! reserve kept back, never granting more than the pool. A lease expires: a sidecar that stops
//! reporting drops out at the next division and its share returns to the others.
//!
//! Pure arithmetic on tokio's clock; [`crate::telemetry`] feeds it reports and sends its grants.

use std::collections::HashMap;
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct LeasePolicy {
    /// Share of the pool never leased (headroom for new sidecars and estimate errors).
    pub reserve: f64,
    /// Share of the pool every live sidecar gets whatever its demand, so a quiet one can start.
    pub floor: f64,
    /// How long a grant is valid without a new report.
    pub ttl: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy { reserve: 0.05, floor: 0.02, ttl: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub tokens_per_minute: u64,
    pub expires_at: Instant,
    /// What the sidecar falls back to when the lease lapses: the leasable pool split evenly
    /// among the sidecars known now.
    pub fallback_tpm: u64,
}

struct PoolBook {
    budget_tpm: u64,
    /// node → (demand in tokens per minute, when reported)
    demand: HashMap<String, (u64, Instant)>,
}

pub struct LeaseBook {
    policy: LeasePolicy,
    pools: HashMap<String, PoolBook>,
}

impl LeaseBook {
    pub fn new(policy: LeasePolicy) -> Self {
        LeaseBook { policy, pools: HashMap::new() }
    }

    /// Sets (or changes) a pool's size: `model_units × tokens_per_minute_per_unit`.
    pub fn set_pool(&mut self, pool: &str, budget_tpm: u64) {
        self.pools
            .entry(pool.to_owned())
            .or_insert_with(|| PoolBook { budget_tpm, demand: HashMap::new() })
            .budget_tpm = budget_tpm;
    }

    /// Takes the pools of a new config; pools that left it are forgotten.
    pub fn set_pools(&mut self, pools: impl IntoIterator<Item = (String, u64)>) {
        let pools: HashMap<String, u64> = pools.into_iter().collect();
        self.pools.retain(|name, _| pools.contains_key(name));
        for (name, budget) in pools {
            self.set_pool(&name, budget);
        }
    }

    pub fn pools(&self) -> impl Iterator<Item = &String> {
        self.pools.keys()
    }

    /// `(budget, live sidecars, total demand)` of a pool, for the admin view.
    pub fn summary(&self, pool: &str, now: Instant) -> Option<(u64, usize, u64)> {
        let p = self.pools.get(pool)?;
        let live = p.demand.values().filter(|(_, at)| now.saturating_duration_since(*at) < self.policy.ttl);
        let (n, d) = live.fold((0, 0), |(n, d), (x, _)| (n + 1, d + x));
        Some((p.budget_tpm, n, d))
    }

    /// A sidecar's reported demand for a pool (tokens per minute it would send there); `false`
    /// for a pool the config does not have. No one sidecar can claim more than the whole pool:
    /// a claim beyond it would only shrink everyone else's share.
    pub fn report(&mut self, pool: &str, node: &str, demand_tpm: u64, now: Instant) -> bool {
        let Some(p) = self.pools.get_mut(pool) else { return false };
        p.demand.insert(node.to_owned(), (demand_tpm.min(p.budget_tpm), now));
        true
    }

    /// Divides the pool among the sidecars that reported within the lease TTL.
    pub fn grants(&mut self, pool: &str, now: Instant) -> HashMap<String, Lease> {
        let ttl = self.policy.ttl;
        let Some(p) = self.pools.get_mut(pool) else { return HashMap::new() };
        p.demand.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
        let n = p.demand.len() as u64;
        if n == 0 {
            return HashMap::new();
        }
        let leasable = (p.budget_tpm as f64 * (1.0 - self.policy.reserve)).floor() as u64;
        // Every live sidecar's floor, shrunk so floors never take more than half the pool: in a
        // large fleet of mostly quiet sidecars, demand must still decide most of it.
        let floor = ((p.budget_tpm as f64 * self.policy.floor) as u64).min(leasable / 2 / n);
        let fallback_tpm = leasable / n;
        let rest = leasable - floor * n;
        let total_demand: u64 = p.demand.values().map(|(d, _)| *d).sum();
        let expires_at = now + ttl;
        p.demand
            .iter()
            .map(|(node, (d, _))| {
                let extra = if total_demand == 0 {
                    rest / n
                } else {
                    ((rest as u128 * u128::from(*d)) / u128::from(total_demand)) as u64
                };
                (node.clone(), Lease { tokens_per_minute: floor + extra, expires_at, fallback_tpm })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> LeaseBook {
        let mut b = LeaseBook::new(LeasePolicy::default());
        b.set_pool("sonnet", 240_000);
        b
    }

    fn total(g: &HashMap<String, Lease>) -> u64 {
        g.values().map(|l| l.tokens_per_minute).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn shares_follow_demand_above_a_floor_and_never_exceed_the_pool() {
        let mut b = book();
        let now = Instant::now();
        b.report("sonnet", "a", 180_000, now);
        b.report("sonnet", "b", 60_000, now);
        b.report("sonnet", "c", 0, now);
        let g = b.grants("sonnet", now);
        let (floor, leasable) = (4_800, 228_000); // 2 % and 95 % of 240k
        assert_eq!(g["c"].tokens_per_minute, floor, "a quiet sidecar still gets its floor");
        let rest = leasable - 3 * floor;
        assert_eq!(g["a"].tokens_per_minute, floor + rest * 3 / 4);
        assert_eq!(g["b"].tokens_per_minute, floor + rest / 4);
        assert!(total(&g) <= leasable, "the reserve is kept: {}", total(&g));
    }

    #[tokio::test(start_paused = true)]
    async fn without_demand_the_pool_is_split_evenly_and_floors_shrink_to_fit() {
        let mut b = book();
        let now = Instant::now();
        for i in 0..100 {
            b.report("sonnet", &format!("n{i}"), 0, now);
        }
        let g = b.grants("sonnet", now);
        assert!(g.values().all(|l| l.tokens_per_minute == 2_280), "228k over 100 sidecars");
        assert!(g.values().all(|l| l.fallback_tpm == 2_280), "the fallback is the even split");
        assert!(total(&g) <= 240_000);
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_large_quiet_fleet_floors_leave_half_the_pool_to_demand() {
        let mut b = book();
        let now = Instant::now();
        for i in 0..10_000 {
            b.report("sonnet", &format!("n{i}"), 0, now);
        }
        b.report("sonnet", "busy", 1_000_000, now);
        let g = b.grants("sonnet", now);
        assert!(g["busy"].tokens_per_minute >= 228_000 / 2, "{}", g["busy"].tokens_per_minute);
        assert!(total(&g) <= 228_000);
        assert_eq!(b.summary("sonnet", now), Some((240_000, 10_001, 240_000)), "no one claims more than the pool");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_sidecars_share_returns_when_its_lease_expires() {
        let mut b = book();
        b.report("sonnet", "a", 100_000, Instant::now());
        b.report("sonnet", "dead", 100_000, Instant::now());
        let g = b.grants("sonnet", Instant::now());
        assert_eq!(g["a"].tokens_per_minute, g["dead"].tokens_per_minute);
        assert_eq!(g["a"].expires_at, Instant::now() + Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(20)).await;
        b.report("sonnet", "a", 100_000, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let g = b.grants("sonnet", Instant::now());
        assert!(!g.contains_key("dead"), "30 s without a report: its lease lapsed");
        assert_eq!(g["a"].tokens_per_minute, 228_000, "and its share went to the live sidecar");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_pools_and_empty_fleets_grant_nothing() {
        let mut b = book();
        assert!(b.grants("sonnet", Instant::now()).is_empty());
        assert!(!b.report("nope", "a", 1, Instant::now()));
        assert!(b.grants("nope", Instant::now()).is_empty());
    }
}
