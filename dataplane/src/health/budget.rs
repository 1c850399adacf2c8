//! The sidecar-wide retry budget: retries aimed at *failing* endpoints may be at most a share of
//! live requests.
//!
//! What it bounds is load amplification onto something that is already failing: a retry to an
//! endpoint whose breaker is OPEN or PARTIAL-OPEN, or that failed in the last second. Fallback to
//! a healthy tier and capacity spillover are not budgeted — they add nothing to a failing
//! upstream, and refusing them would drop a request some endpoint could serve. (Envoy's retry
//! budget caps retries as a share of *all* active requests, and Finagle's `RetryBudget` deposits a
//! share of each request to withdraw from on a retry; both bound every retry, because there every
//! retry goes back to the same cluster. Here the second attempt usually goes elsewhere, so only
//! the ones that go somewhere failing are counted; docs/resilience.md has the comparison.)
//!
//! Counts live in one-second buckets over `window_s`; a budgeted retry is allowed while the
//! window's budgeted retries stay under `max(ratio × requests, min_per_s × window_s)`.

use spillway_api::config::RetryBudget;
use spillway_api::window::Window;
use std::ops::AddAssign;
use tokio::time::Instant;

#[derive(Clone, Copy, Default)]
struct Tally {
    requests: u64,
    retries: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.requests += o.requests;
        self.retries += o.retries;
    }
}

pub struct Budget {
    window: Window<Tally>,
}

impl Budget {
    pub fn new(now: Instant) -> Self {
        Budget { window: Window::new(1, now) }
    }

    /// Counts a new request.
    pub fn request(&mut self, now: Instant, policy: &RetryBudget) {
        self.window.resize(policy.window_s);
        self.window.record(now, Tally { requests: 1, retries: 0 });
    }

    /// Whether one more retry at a failing endpoint fits; if so it is counted.
    pub fn try_retry(&mut self, now: Instant, policy: &RetryBudget) -> bool {
        self.window.resize(policy.window_s);
        let t = self.window.totals(now);
        let allowed = (policy.ratio * t.requests as f64).max(f64::from(policy.min_per_s) * f64::from(policy.window_s));
        if (t.retries as f64) < allowed {
            self.window.record(now, Tally { requests: 0, retries: 1 });
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_a_share_of_requests_with_a_floor() {
        let p = RetryBudget { ratio: 0.2, min_per_s: 3, window_s: 10 };
        let mut b = Budget::new(Instant::now());
        let now = Instant::now();
        // Quiet sidecar: the floor (3/s over 10 s = 30) applies.
        let allowed = (0..100).filter(|_| b.try_retry(now, &p)).count();
        assert_eq!(allowed, 30);
        // Busy sidecar: 1000 requests allow 200 retries in the window.
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        for _ in 0..1000 {
            b.request(now, &p);
        }
        assert_eq!((0..1000).filter(|_| b.try_retry(now, &p)).count(), 200);
        // The window slides: ten seconds later the budget is back.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_retry(Instant::now(), &p));
    }
}
