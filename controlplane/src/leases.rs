//! Provisioned-throughput leases: each pool's tokens per minute divided among the sidecars that
//! use it, in proportion to the demand they report, with a floor for every live sidecar and a
//! reserve kept back — and, whatever happens to messages and leaders, **the grants sidecars hold
//! never add up to more than the pool**.
//!
//! Why that needs more than dividing the pool each tick: a grant is valid for a TTL at the
//! sidecar, and grants travel. Raise A and lower B on one tick, and until B hears of it, both
//! hold their larger grant. So the book keeps, per sidecar, every grant it sent that may still be
//! held (its *commitment* is the largest), and funds an increase only from what no one may still
//! hold. A decrease frees capacity when the sidecar reports holding the newer grant (reports
//! carry the grant a sidecar holds), or when the older one expires.
//!
//! Grants are stamped `(epoch, seq)`: a sidecar keeps the latest it has seen and ignores older
//! ones, so a grant delayed behind a newer one, or sent by a deposed leader, is never taken. A
//! book that starts a new epoch (a new leader, a restarted control plane) does not know what its
//! predecessor granted: for one TTL it grants a sidecar no more than the earlier epoch's grant it
//! reports holding (so each sidecar holds one or the other, and their sum stays what the
//! predecessor allowed), and nothing to one holding none — after which every grant of the old
//! epoch has expired. Such a sidecar keeps running as it did before its first grant. Commitments are counted a delivery
//! margin past their TTL, because a sidecar starts its TTL when the grant arrives.
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
    /// How late a grant may reach its sidecar and still be counted right: a sidecar's TTL starts
    /// when the grant arrives, so the book counts it this much longer.
    pub delivery_margin: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            reserve: 0.05,
            floor: 0.02,
            ttl: Duration::from_secs(30),
            delivery_margin: Duration::from_secs(5),
        }
    }
}

/// Orders grants: a later epoch (leader) wins, then a later grant of the same leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub tokens_per_minute: u64,
    pub expires_at: Instant,
    /// What the sidecar falls back to when the lease lapses: the leasable pool split evenly
    /// among the sidecars known now.
    pub fallback_tpm: u64,
    pub stamp: Stamp,
}

/// The grant a sidecar reports holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub stamp: Stamp,
    pub tokens_per_minute: u64,
    /// How much longer the sidecar will use it.
    pub valid_for: Duration,
}

/// A grant that may still be held: sent by this book, or reported from an earlier epoch.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    stamp: Stamp,
    tpm: u64,
    /// When it stops counting: its expiry plus the delivery margin.
    until: Instant,
}

#[derive(Default)]
struct Member {
    demand_tpm: u64,
    reported_at: Option<Instant>,
    /// What the sidecar last said it holds, if anything.
    held: Option<Held>,
    outstanding: Vec<Outstanding>,
}

impl Member {
    fn commitment(&self, now: Instant) -> u64 {
        self.outstanding.iter().filter(|o| o.until > now).map(|o| o.tpm).max().unwrap_or(0)
    }
}

struct PoolBook {
    budget_tpm: u64,
    members: HashMap<String, Member>,
}

pub struct LeaseBook {
    policy: LeasePolicy,
    pools: HashMap<String, PoolBook>,
    epoch: u64,
    seq: u64,
    /// Until then, grants of an earlier epoch may be held that this book never saw.
    inherited_until: Instant,
    /// A sidecar reported a later epoch: another leader took over; this book grants nothing more.
    deposed: bool,
}

impl LeaseBook {
    /// A book for `epoch`, started at `now` by a leader that cannot know what an earlier one
    /// granted (see the module docs).
    pub fn new(policy: LeasePolicy, epoch: u64, now: Instant) -> Self {
        let inherited_until = now + policy.ttl + policy.delivery_margin;
        LeaseBook { policy, pools: HashMap::new(), epoch, seq: 0, inherited_until, deposed: false }
    }

    /// A book for a fleet that has never been granted anything (a first start, tests).
    pub fn fresh(policy: LeasePolicy, now: Instant) -> Self {
        LeaseBook { inherited_until: now, ..LeaseBook::new(policy, 1, now) }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sets (or changes) a pool's size: `model_units × tokens_per_minute_per_unit`.
    pub fn set_pool(&mut self, pool: &str, budget_tpm: u64) {
        self.pools
            .entry(pool.to_owned())
            .or_insert_with(|| PoolBook { budget_tpm, members: HashMap::new() })
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

    fn live(&self, m: &Member, now: Instant) -> bool {
        m.reported_at.is_some_and(|at| now.saturating_duration_since(at) < self.policy.ttl)
    }

    /// `(budget, live sidecars, total demand)` of a pool, for the admin view.
    pub fn summary(&self, pool: &str, now: Instant) -> Option<(u64, usize, u64)> {
        let p = self.pools.get(pool)?;
        let live = p.members.values().filter(|m| self.live(m, now));
        let (n, d) = live.fold((0, 0), |(n, d), m| (n + 1, d + m.demand_tpm));
        Some((p.budget_tpm, n, d))
    }

    /// A sidecar's reported demand for a pool (tokens per minute it would send there) and the
    /// grant it holds; `false` for a pool the config does not have. No one sidecar can claim more
    /// than the whole pool: a claim beyond it would only shrink everyone else's share.
    pub fn report(&mut self, pool: &str, node: &str, demand_tpm: u64, held: Option<Held>, now: Instant) -> bool {
        let (epoch, margin) = (self.epoch, self.policy.delivery_margin);
        let Some(p) = self.pools.get_mut(pool) else { return false };
        let m = p.members.entry(node.to_owned()).or_default();
        m.demand_tpm = demand_tpm.min(p.budget_tpm);
        m.reported_at = Some(now);
        m.held = held;
        match held {
            // It holds a grant of ours: it will never take an older one again. (Only a stamp this
            // book sent counts: a made-up one must not make it forget what may be held.)
            Some(h) if h.stamp.epoch == epoch && m.outstanding.iter().any(|o| o.stamp == h.stamp) => {
                m.outstanding.retain(|o| o.stamp >= h.stamp);
            }
            Some(h) if h.stamp.epoch == epoch => {}
            // An earlier leader's grant: counted until it expires.
            Some(h) if h.stamp.epoch < epoch => {
                let until = now + h.valid_for + margin;
                if !m.outstanding.iter().any(|o| o.stamp == h.stamp) {
                    m.outstanding.push(Outstanding { stamp: h.stamp, tpm: h.tokens_per_minute, until });
                }
            }
            Some(_) => {
                if !self.deposed {
                    tracing::warn!(
                        pool,
                        node,
                        epoch,
                        "a sidecar holds a later leader's grant: this book grants no more"
                    );
                }
                self.deposed = true;
            }
            None => {}
        }
        true
    }

    /// This tick's grants for a pool: each live sidecar's share of the pool (see [`divide`]),
    /// raised no further than no one may still hold.
    pub fn grants(&mut self, pool: &str, now: Instant) -> HashMap<String, Lease> {
        if self.deposed {
            return HashMap::new();
        }
        let (ttl, margin) = (self.policy.ttl, self.policy.delivery_margin);
        let inheriting = now < self.inherited_until;
        let live: Vec<String> = match self.pools.get(pool) {
            Some(p) => p.members.iter().filter(|(_, m)| self.live(m, now)).map(|(n, _)| n.clone()).collect(),
            None => return HashMap::new(),
        };
        let Some(p) = self.pools.get_mut(pool) else { return HashMap::new() };
        // Forget what can no longer be held, and sidecars that are gone with nothing held.
        for m in p.members.values_mut() {
            m.outstanding.retain(|o| o.until > now);
        }
        p.members.retain(|n, m| !m.outstanding.is_empty() || live.contains(n));
        if live.is_empty() {
            return HashMap::new();
        }
        let demands: Vec<u64> = live.iter().map(|n| p.members[n].demand_tpm).collect();
        let (leasable, shares, fallback_tpm) = divide(p.budget_tpm, &self.policy, &demands);
        let committed: u64 = p.members.values().map(|m| m.commitment(now)).sum();
        let slack = leasable.saturating_sub(committed);
        // Increases first ask for what they want above their commitment, then share the slack.
        let wants: Vec<u64> = live
            .iter()
            .zip(&shares)
            .map(|(n, want)| {
                let m = &p.members[n];
                if inheriting {
                    // An earlier epoch's grants may be out there: raise nobody above what it holds.
                    0
                } else {
                    want.saturating_sub(m.commitment(now))
                }
            })
            .collect();
        let total_want: u64 = wants.iter().sum();
        // What increases may share: never more than no one may still hold.
        let pot = u128::from(slack.min(total_want));
        let mut out = HashMap::with_capacity(live.len());
        for ((node, share), want) in live.iter().zip(&shares).zip(&wants) {
            let m = p.members.get_mut(node).expect("live members are in the book");
            let base = m.commitment(now);
            let tpm = if inheriting {
                // What the predecessor granted it, as far as this book has heard.
                let earlier = m.outstanding.iter().filter(|o| o.stamp.epoch < self.epoch).map(|o| o.tpm).max();
                match earlier {
                    Some(covered) => (*share).min(covered),
                    None => continue,
                }
            } else if *want == 0 {
                *share
            } else {
                base + ((pot * u128::from(*want)) / u128::from(total_want)) as u64
            };
            self.seq += 1;
            let stamp = Stamp { epoch: self.epoch, seq: self.seq };
            let expires_at = now + ttl;
            m.outstanding.push(Outstanding { stamp, tpm, until: expires_at + margin });
            out.insert(node.clone(), Lease { tokens_per_minute: tpm, expires_at, fallback_tpm, stamp });
        }
        out
    }
}

/// The demand-proportional division of one pool among `demands.len()` live sidecars: the pool
/// minus the reserve, a floor each (shrunk so floors never take more than half), the rest in
/// proportion to demand. Returns `(leasable, shares, fallback)`.
pub fn divide(budget_tpm: u64, policy: &LeasePolicy, demands: &[u64]) -> (u64, Vec<u64>, u64) {
    let n = demands.len().max(1) as u64;
    let leasable = (budget_tpm as f64 * (1.0 - policy.reserve)).floor() as u64;
    // In a large fleet of mostly quiet sidecars, demand must still decide most of the pool.
    let floor = ((budget_tpm as f64 * policy.floor) as u64).min(leasable / 2 / n);
    let fallback = leasable / n;
    let rest = leasable - floor * n;
    let total: u64 = demands.iter().sum();
    let shares = demands
        .iter()
        .map(|d| {
            let extra =
                if total == 0 { rest / n } else { ((rest as u128 * u128::from(*d)) / u128::from(total)) as u64 };
            floor + extra
        })
        .collect();
    (leasable, shares, fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> LeaseBook {
        let mut b = LeaseBook::fresh(LeasePolicy::default(), Instant::now());
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
        b.report("sonnet", "a", 180_000, None, now);
        b.report("sonnet", "b", 60_000, None, now);
        b.report("sonnet", "c", 0, None, now);
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
            b.report("sonnet", &format!("n{i}"), 0, None, now);
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
            b.report("sonnet", &format!("n{i}"), 0, None, now);
        }
        b.report("sonnet", "busy", 1_000_000, None, now);
        let g = b.grants("sonnet", now);
        assert!(g["busy"].tokens_per_minute >= 228_000 / 2, "{}", g["busy"].tokens_per_minute);
        assert!(total(&g) <= 228_000);
        assert_eq!(b.summary("sonnet", now), Some((240_000, 10_001, 240_000)), "no one claims more than the pool");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_sidecars_share_returns_when_its_lease_expires() {
        let mut b = book();
        b.report("sonnet", "a", 100_000, None, Instant::now());
        b.report("sonnet", "dead", 100_000, None, Instant::now());
        let g = b.grants("sonnet", Instant::now());
        assert_eq!(g["a"].tokens_per_minute, g["dead"].tokens_per_minute);
        assert_eq!(g["a"].expires_at, Instant::now() + Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(20)).await;
        b.report("sonnet", "a", 100_000, None, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let g = b.grants("sonnet", Instant::now());
        assert!(!g.contains_key("dead"), "30 s without a report: no new grant");
        assert_eq!(g["a"].tokens_per_minute, 114_000, "but its last grant may still be held: no raise yet");
        tokio::time::advance(LeasePolicy::default().delivery_margin + Duration::from_secs(1)).await;
        b.report("sonnet", "a", 100_000, None, Instant::now());
        let g = b.grants("sonnet", Instant::now());
        assert_eq!(g["a"].tokens_per_minute, 228_000, "once it has expired, its share goes to the live sidecar");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_pools_and_empty_fleets_grant_nothing() {
        let mut b = book();
        assert!(b.grants("sonnet", Instant::now()).is_empty());
        assert!(!b.report("nope", "a", 1, None, Instant::now()));
        assert!(b.grants("nope", Instant::now()).is_empty());
    }

    fn held(l: &Lease, now: Instant) -> Option<Held> {
        Some(Held { stamp: l.stamp, tokens_per_minute: l.tokens_per_minute, valid_for: l.expires_at - now })
    }

    #[tokio::test(start_paused = true)]
    async fn a_raise_waits_until_the_lowered_grant_is_no_longer_held() {
        let mut b = book();
        let now = Instant::now();
        b.report("sonnet", "a", 200_000, None, now);
        b.report("sonnet", "b", 0, None, now);
        let g1 = b.grants("sonnet", now);
        assert!(g1["a"].tokens_per_minute > 200_000, "{g1:?}");
        // Demand moves from a to b. b may be raised only by what a cannot still hold.
        b.report("sonnet", "a", 0, held(&g1["a"], now), now);
        b.report("sonnet", "b", 200_000, held(&g1["b"], now), now);
        let g2 = b.grants("sonnet", now);
        assert!(g2["a"].tokens_per_minute < g1["a"].tokens_per_minute, "a is lowered at once");
        assert_eq!(g2["b"].tokens_per_minute, g1["b"].tokens_per_minute, "b waits: a may still hold its grant");
        assert!(g2["a"].stamp > g1["a"].stamp);
        // a reports holding the lowered grant: the difference is free, b is raised.
        b.report("sonnet", "a", 0, held(&g2["a"], now), now);
        b.report("sonnet", "b", 200_000, held(&g2["b"], now), now);
        let g3 = b.grants("sonnet", now);
        assert!(g3["b"].tokens_per_minute > 200_000, "{g3:?}");
        assert!(g3["a"].tokens_per_minute + g3["b"].tokens_per_minute <= 228_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_epoch_grants_no_more_than_what_is_held_until_the_old_grants_expire() {
        let policy = LeasePolicy::default();
        let mut old = book();
        let now = Instant::now();
        old.report("sonnet", "a", 100_000, None, now);
        old.report("sonnet", "b", 100_000, None, now);
        let g = old.grants("sonnet", now);
        // The leader changes. a reports its grant; b has not reported yet; c is new.
        let mut new = LeaseBook::new(policy.clone(), 2, now);
        new.set_pool("sonnet", 240_000);
        new.report("sonnet", "a", 200_000, held(&g["a"], now), now);
        new.report("sonnet", "c", 200_000, None, now);
        let n = new.grants("sonnet", now);
        assert_eq!(n["a"].tokens_per_minute, g["a"].tokens_per_minute, "no more than it holds");
        assert!(!n.contains_key("c"), "a newcomer waits: b's grant may still be out there");
        assert_eq!(n["a"].stamp.epoch, 2);
        // Once every grant of the old epoch has expired, the division is fresh.
        tokio::time::advance(policy.ttl + policy.delivery_margin).await;
        let now = Instant::now();
        new.report("sonnet", "a", 100_000, held(&n["a"], now), now);
        new.report("sonnet", "c", 100_000, None, now);
        let n2 = new.grants("sonnet", now);
        assert!(n2.contains_key("c"));
        assert!(n2.values().map(|l| l.tokens_per_minute).sum::<u64>() <= 228_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_book_that_sees_a_later_epoch_grants_nothing_more() {
        let mut b = book();
        let now = Instant::now();
        let later =
            Held { stamp: Stamp { epoch: 9, seq: 1 }, tokens_per_minute: 10, valid_for: Duration::from_secs(30) };
        b.report("sonnet", "a", 100_000, Some(later), now);
        assert!(b.grants("sonnet", now).is_empty(), "a deposed leader stops");
    }
}
