//! Token accounting for one provisioned-throughput pool, on this sidecar.
//!
//! A request is charged its estimate when it is sent (prompt estimate + expected output), the
//! estimate is replaced by the real usage when the response ends, and it is released if the
//! attempt fails. Utilisation is (tokens finished in the last minute + estimates of requests in
//! flight) / budget, where the budget is the whole pool when standalone, or the lease the control
//! plane grants.

use spillway_api::window::Window;
use tokio::time::Instant;

pub struct Ledger {
    budget_tpm: u64,
    /// The control plane's lease, when the budget is one.
    lease: Option<Lease>,
    /// Tokens of finished requests over the last minute.
    used: Window<u64>,
    in_flight: u64,
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
}

/// A charge held by an in-flight request.
#[derive(Debug)]
pub struct Charge {
    pub estimate: u64,
}

impl Ledger {
    pub fn new(budget_tpm: u64, now: Instant) -> Self {
        Ledger { budget_tpm, lease: None, used: Window::new(60, now), in_flight: 0, charged_total: 0, actual_total: 0 }
    }

    /// Replaces the budget with a fixed one (the whole pool, standalone).
    pub fn set_budget(&mut self, tpm: u64) {
        self.budget_tpm = tpm;
        self.lease = None;
    }

    /// Replaces the budget with a lease that holds until `lease.until`.
    pub fn set_lease(&mut self, tpm: u64, lease: Lease) {
        self.budget_tpm = tpm;
        self.lease = Some(lease);
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

    /// Share of the budget used in the last minute, in-flight estimates included.
    pub fn utilisation(&self, now: Instant) -> f64 {
        let budget = self.budget(now);
        if budget == 0 {
            return f64::INFINITY;
        }
        (self.used.totals(now) + self.in_flight) as f64 / budget as f64
    }

    pub fn charge(&mut self, estimate: u64) -> Charge {
        self.in_flight += estimate;
        self.charged_total += estimate;
        Charge { estimate }
    }

    /// The request ended: its real usage replaces the estimate in the window.
    pub fn settle(&mut self, now: Instant, charge: Charge, actual: u64) {
        self.in_flight = self.in_flight.saturating_sub(charge.estimate);
        self.actual_total += actual;
        self.used.record(now, actual);
    }

    /// The attempt failed or was throttled: nothing was used.
    pub fn release(&mut self, charge: Charge) {
        self.in_flight = self.in_flight.saturating_sub(charge.estimate);
        self.charged_total = self.charged_total.saturating_sub(charge.estimate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn estimates_count_in_flight_and_are_replaced_by_real_usage() {
        let mut l = Ledger::new(10_000, Instant::now());
        let a = l.charge(3_000);
        let b = l.charge(2_000);
        assert_eq!(l.utilisation(Instant::now()), 0.5, "in-flight estimates count");
        l.settle(Instant::now(), a, 1_000);
        assert_eq!(l.utilisation(Instant::now()), 0.3, "the estimate of 3000 became the 1000 really used");
        l.release(b);
        assert_eq!(l.utilisation(Instant::now()), 0.1, "a failed attempt used nothing");
        assert_eq!((l.charged_total, l.actual_total), (3_000, 1_000));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(l.utilisation(Instant::now()), 0.1, "still inside the minute");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.utilisation(Instant::now()), 0.0, "a minute later it is gone");
        l.set_budget(0);
        assert!(l.utilisation(Instant::now()).is_infinite(), "no lease, no provisioned capacity");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_gives_way_to_its_conservative_fallback() {
        let mut l = Ledger::new(100_000, Instant::now());
        let until = Instant::now() + Duration::from_secs(30);
        l.set_lease(40_000, Lease { until, fallback_tpm: 10_000 });
        let _c = l.charge(5_000);
        assert_eq!(l.budget(Instant::now()), 40_000);
        assert_eq!(l.utilisation(Instant::now()), 0.125);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(l.budget(Instant::now()), 10_000, "no renewal within its validity: the fallback share");
        assert_eq!(l.utilisation(Instant::now()), 0.5);
        l.set_lease(30_000, Lease { until: Instant::now() + Duration::from_secs(30), fallback_tpm: 10_000 });
        assert_eq!(l.budget(Instant::now()), 30_000, "a new grant replaces it");
    }
}
