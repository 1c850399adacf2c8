//! Token accounting for one provisioned-throughput pool, on this sidecar.
//!
//! Utilisation is the pool's recent *rate* against its budget: tokens admitted over the last
//! [`RATE_WINDOW_S`] seconds, projected per minute, over the budget (the whole pool when
//! standalone, or the lease the control plane grants). A request is counted when it is sent —
//! its estimate (prompt estimate + expected output), as providers count a request against a
//! per-minute limit when they admit it — and the estimate is replaced by the real usage when the
//! response ends, or removed if the attempt failed.
//!
//! Why seconds and not the minute the budget is named in: a sliding minute reacts to a surge
//! only once enough of it has filled, and after the surge it stays full for up to a minute,
//! sending calm traffic on-demand long after PT has room again. A few seconds' rate moves with
//! the traffic both ways, and whatever the rate allows in every few seconds sums to no more than
//! the budget over any minute.

use spillway_api::window::Window;
use tokio::time::Instant;

/// The seconds whose admitted tokens make the rate (plus the current, partial second).
pub const RATE_WINDOW_S: u32 = 5;

pub struct Ledger {
    budget_tpm: u64,
    /// The control plane's lease, when the budget is one.
    lease: Option<Lease>,
    /// Tokens admitted per second: estimates at send time, corrected by real usage.
    admitted: Window<i64>,
    /// A new ledger has no history: its rate is over the time it has existed (at least a
    /// second), not over seconds it assumes were idle, or its first moments would admit a
    /// whole window's worth at once.
    started: Instant,
    /// Totals since start, for metrics: estimates charged and tokens actually used.
    pub charged_total: u64,
    pub actual_total: u64,
}

/// A lease holds until `until`; after that (the control plane is gone) the sidecar uses the
/// conservative `fallback_tpm` the grant named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub until: Instant,
    pub fallback_tpm: u64,
    /// The grant's `(epoch, seq)`: only a later one replaces it.
    pub stamp: (u64, u64),
}

/// A charge held by an in-flight request.
#[derive(Debug)]
pub struct Charge {
    pub estimate: u64,
    /// When it was admitted: its correction goes to that second.
    at: Instant,
}

impl Ledger {
    pub fn new(budget_tpm: u64, now: Instant) -> Self {
        Ledger {
            budget_tpm,
            lease: None,
            admitted: Window::new(RATE_WINDOW_S + 1, now),
            started: now,
            charged_total: 0,
            actual_total: 0,
        }
    }

    /// Replaces the budget with a fixed one (the whole pool, standalone).
    pub fn set_budget(&mut self, tpm: u64) {
        self.budget_tpm = tpm;
        self.lease = None;
    }

    /// Replaces the budget with a lease that holds until `lease.until`, unless the lease held
    /// is a later grant (this one was delayed, or sent by a leader since replaced); `false` then.
    pub fn set_lease(&mut self, tpm: u64, lease: Lease) -> bool {
        if self.lease.is_some_and(|held| held.stamp > lease.stamp) {
            return false;
        }
        self.budget_tpm = tpm;
        self.lease = Some(lease);
        true
    }

    /// The tokens per minute of the lease (valid or not), or the fixed budget.
    pub fn leased_tpm(&self) -> u64 {
        self.budget_tpm
    }

    /// The budget in force at `now`: a lapsed lease gives way to its fallback share.
    pub fn budget(&self, now: Instant) -> u64 {
        match self.lease {
            Some(l) if now >= l.until => l.fallback_tpm,
            _ => self.budget_tpm,
        }
    }

    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Tokens per minute at the recent rate.
    pub fn rate_tpm(&self, now: Instant) -> f64 {
        let tokens = self.admitted.totals(now).max(0) as f64;
        let window = f64::from(RATE_WINDOW_S) + self.admitted.into_second(now).as_secs_f64();
        let span = window.min(now.saturating_duration_since(self.started).as_secs_f64().max(1.0));
        tokens * 60.0 / span
    }

    /// The recent rate as a share of the budget.
    pub fn utilisation(&self, now: Instant) -> f64 {
        let budget = self.budget(now);
        if budget == 0 {
            return f64::INFINITY;
        }
        self.rate_tpm(now) / budget as f64
    }

    pub fn charge(&mut self, now: Instant, estimate: u64) -> Charge {
        self.admitted.record(now, to_i64(estimate));
        self.charged_total += estimate;
        Charge { estimate, at: now }
    }

    /// The request ended: its real usage replaces the estimate.
    pub fn settle(&mut self, now: Instant, charge: Charge, actual: u64) {
        self.actual_total += actual;
        self.admitted.amend(charge.at, now, to_i64(actual) - to_i64(charge.estimate));
    }

    /// The attempt failed or was throttled: nothing was used.
    pub fn release(&mut self, now: Instant, charge: Charge) {
        self.charged_total = self.charged_total.saturating_sub(charge.estimate);
        self.admitted.amend(charge.at, now, -to_i64(charge.estimate));
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_rate_counts_admitted_estimates_replaced_by_real_usage() {
        // 6,000 tokens a minute = 500 over the five-second rate window.
        let mut l = Ledger::new(6_000, Instant::now() - Duration::from_secs(60));
        let a = l.charge(Instant::now(), 300);
        let b = l.charge(Instant::now(), 200);
        assert_eq!(l.utilisation(Instant::now()), 1.0, "estimates count from the moment they are sent");
        l.settle(Instant::now(), a, 100);
        assert_eq!(l.utilisation(Instant::now()), 0.6, "the estimate of 300 became the 100 really used");
        l.release(Instant::now(), b);
        assert_eq!(l.utilisation(Instant::now()), 0.2, "a failed attempt used nothing");
        assert_eq!((l.charged_total, l.actual_total), (300, 100));
        tokio::time::advance(Duration::from_millis(5_999)).await;
        assert!(l.utilisation(Instant::now()) > 0.0, "still inside the window");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(l.utilisation(Instant::now()), 0.0, "seconds later it is gone, not a minute later");
        l.set_budget(0);
        assert!(l.utilisation(Instant::now()).is_infinite(), "no lease, no provisioned capacity");
    }

    #[tokio::test(start_paused = true)]
    async fn a_correction_after_its_second_left_the_window_changes_nothing() {
        let mut l = Ledger::new(6_000, Instant::now());
        assert_eq!(l.rate_tpm(Instant::now()), 0.0);
        let long = l.charge(Instant::now(), 300);
        tokio::time::advance(Duration::from_secs(30)).await;
        let _now = l.charge(Instant::now(), 100);
        l.release(Instant::now(), long);
        let expected = 100.0 * 60.0 / 5.0 / 6_000.0;
        assert_eq!(l.utilisation(Instant::now()), expected, "the long request's release is not taken off today's rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_ledger_measures_its_rate_over_the_time_it_has_existed() {
        let mut l = Ledger::new(6_000, Instant::now());
        let _a = l.charge(Instant::now(), 100);
        assert_eq!(l.rate_tpm(Instant::now()), 6_000.0, "100 in its first second: 6,000 a minute, not 1,200");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.rate_tpm(Instant::now()), 3_000.0, "100 in two seconds");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_gives_way_to_its_conservative_fallback() {
        let mut l = Ledger::new(100_000, Instant::now());
        let until = Instant::now() + Duration::from_secs(30);
        assert!(l.set_lease(48_000, Lease { until, fallback_tpm: 12_000, stamp: (1, 1) }));
        tokio::time::advance(Duration::from_secs(29)).await;
        let _c = l.charge(Instant::now(), 1_000);
        assert_eq!(l.budget(Instant::now()), 48_000);
        assert_eq!(l.utilisation(Instant::now()), 0.25, "1,000 in 5 s is 12,000 a minute");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.budget(Instant::now()), 12_000, "no renewal within its validity: the fallback share");
        assert_eq!(l.utilisation(Instant::now()), 1.0);
        let later = Lease { until: Instant::now() + Duration::from_secs(30), fallback_tpm: 12_000, stamp: (1, 2) };
        assert!(l.set_lease(24_000, later));
        assert_eq!(l.budget(Instant::now()), 24_000, "a new grant replaces it");
        let delayed = Lease { until: Instant::now() + Duration::from_secs(30), fallback_tpm: 12_000, stamp: (1, 1) };
        assert!(!l.set_lease(96_000, delayed), "an older grant arriving late is ignored");
        let deposed = Lease { stamp: (0, 9), ..delayed };
        assert!(!l.set_lease(96_000, deposed), "and so is one from an earlier leader");
        assert_eq!(l.budget(Instant::now()), 24_000);
    }
}
