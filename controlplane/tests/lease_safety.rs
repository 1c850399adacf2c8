//! The promise of the lease book, as a property: whatever the order, delay or loss of grants,
//! whoever stops reporting, and however often the leader changes, the grants sidecars hold at any
//! moment never add up to more than the pool.
//!
//! The model: six sidecars each keep the latest grant they have received (by `(epoch, seq)`) for
//! its TTL from when it arrived, and report it with their demand. One leader at a time computes
//! grants; a handover starts a new book at the next epoch (the old leader stops granting, but its
//! grants in flight still arrive). Grants arrive up to the delivery margin late, or never.

use proptest::prelude::*;
use spillway_controlplane::leases::{Held, LeaseBook, LeasePolicy, Stamp};
use std::collections::VecDeque;
use tokio::time::{Duration, Instant};

const POOL: u64 = 240_000;
const SIDECARS: usize = 6;

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Report { sidecar: usize, demand: u64 },
    Tick { delays_ms: Vec<u64>, lost: Vec<bool> },
    Handover,
    Silence(usize),
    Revive(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u64..12_000).prop_map(Step::Advance),
        4 => (0..SIDECARS, prop_oneof![Just(0u64), 0u64..400_000]).prop_map(|(sidecar, demand)| Step::Report { sidecar, demand }),
        3 => (proptest::collection::vec(0u64..=5_000, SIDECARS), proptest::collection::vec(proptest::bool::weighted(0.1), SIDECARS))
            .prop_map(|(delays_ms, lost)| Step::Tick { delays_ms, lost }),
        1 => Just(Step::Handover),
        1 => (0..SIDECARS).prop_map(Step::Silence),
        1 => (0..SIDECARS).prop_map(Step::Revive),
    ]
}

#[derive(Default)]
struct Sidecar {
    /// (stamp, tokens per minute, until)
    held: Option<(Stamp, u64, Instant)>,
    /// Grants on their way: (arrives at, stamp, tpm, valid for).
    inbox: VecDeque<(Instant, Stamp, u64, Duration)>,
    silent: bool,
}

impl Sidecar {
    fn deliver(&mut self, now: Instant) {
        while let Some(&(at, stamp, tpm, valid_for)) = self.inbox.front() {
            if at > now {
                break;
            }
            self.inbox.pop_front();
            if self.held.is_none_or(|(h, _, _)| stamp > h) {
                self.held = Some((stamp, tpm, at + valid_for));
            }
        }
    }

    fn holding(&self, now: Instant) -> u64 {
        self.held.filter(|(_, _, until)| *until > now).map_or(0, |(_, tpm, _)| tpm)
    }

    fn report(&self, now: Instant) -> Option<Held> {
        let (stamp, tpm, until) = self.held?;
        (until > now).then(|| Held { stamp, tokens_per_minute: tpm, valid_for: until - now })
    }
}

/// Runs the steps, checking the property at every instant; the most held at once.
fn run(steps: &[Step]) -> Result<u64, TestCaseError> {
    let policy = LeasePolicy::default();
    let start = Instant::now();
    let mut now = start;
    let mut epoch = 1;
    let mut leader = LeaseBook::new(policy.clone(), epoch, now);
    leader.set_pool("pt", POOL);
    let mut sidecars: Vec<Sidecar> = (0..SIDECARS).map(|_| Sidecar::default()).collect();
    let mut most = 0;
    for s in steps {
        match s {
            Step::Advance(ms) => {
                // Deliver in time order, so every instant in between is checked.
                let end = now + Duration::from_millis(*ms);
                while now < end {
                    now = (now + Duration::from_millis(250)).min(end);
                    sidecars.iter_mut().for_each(|c| c.deliver(now));
                    let total: u64 = sidecars.iter().map(|c| c.holding(now)).sum();
                    prop_assert!(total <= POOL, "{total} held at +{:?}", now - start);
                    most = most.max(total);
                }
            }
            Step::Report { sidecar, demand } => {
                let c = &sidecars[*sidecar];
                if !c.silent {
                    leader.report("pt", &format!("s{sidecar}"), *demand, c.report(now), now);
                }
            }
            Step::Tick { delays_ms, lost } => {
                for (node, lease) in leader.grants("pt", now) {
                    let i: usize = node[1..].parse().unwrap();
                    if lost[i] {
                        continue;
                    }
                    let valid_for = lease.expires_at - now;
                    // In order on one stream: never before the previous grant to this sidecar.
                    let after = sidecars[i].inbox.back().map_or(now, |b| b.0);
                    let at = (now + Duration::from_millis(delays_ms[i])).max(after);
                    sidecars[i].inbox.push_back((at, lease.stamp, lease.tokens_per_minute, valid_for));
                }
            }
            Step::Handover => {
                epoch += 1;
                leader = LeaseBook::new(policy.clone(), epoch, now);
                leader.set_pool("pt", POOL);
            }
            Step::Silence(i) => sidecars[*i].silent = true,
            Step::Revive(i) => sidecars[*i].silent = false,
        }
        let total: u64 = sidecars.iter().map(|c| c.holding(now)).sum();
        prop_assert!(total <= POOL, "{total} held at +{:?} after {s:?}", now - start);
    }
    Ok(most)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("SPILLWAY_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn held_grants_never_exceed_the_pool(steps in proptest::collection::vec(step(), 1..120)) {
        run(&steps).map(|_| ())?;
    }
}

/// The property is not vacuous: an ordinary run grants most of the pool.
#[test]
fn an_ordinary_run_leases_most_of_the_pool() {
    let mut steps = Vec::new();
    for round in 0..20 {
        for sidecar in 0..SIDECARS {
            steps.push(Step::Report { sidecar, demand: 50_000 + 10_000 * sidecar as u64 });
        }
        steps.push(Step::Tick { delays_ms: vec![10; SIDECARS], lost: vec![false; SIDECARS] });
        steps.push(Step::Advance(if round == 10 { 0 } else { 5_000 }));
        if round == 10 {
            steps.push(Step::Handover);
        }
    }
    let most = run(&steps).unwrap();
    assert!(most >= POOL * 8 / 10, "only {most} of {POOL} was ever held");
}
