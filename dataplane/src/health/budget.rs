//! The sidecar-wide retry budget: fallback attempts may be at most a share of live requests.
//!
//! Without it an outage multiplies load: every request that fails at the primary is sent again,
//! to a backup that may be struggling for the same reason. Counts live in one-second buckets
//! over `window_s`; a fallback is allowed while the window's fallbacks stay under
//! `max(ratio × requests, min_per_s × window_s)`.

use spillway_api::config::RetryBudget;
use spillway_api::window::Window;
use std::ops::AddAssign;
use tokio::time::Instant;

#[derive(Clone, Copy, Default)]
struct Tally {
    requests: u64,
    fallbacks: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.requests += o.requests;
        self.fallbacks += o.fallbacks;
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
        self.window.record(now, Tally { requests: 1, fallbacks: 0 });
    }

    /// Whether one more fallback attempt fits; if so it is counted.
    pub fn try_fallback(&mut self, now: Instant, policy: &RetryBudget) -> bool {
        self.window.resize(policy.window_s);
        let t = self.window.totals(now);
        let allowed = (policy.ratio * t.requests as f64).max(f64::from(policy.min_per_s) * f64::from(policy.window_s));
        if (t.fallbacks as f64) < allowed {
            self.window.record(now, Tally { requests: 0, fallbacks: 1 });
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
    async fn fallbacks_are_capped_at_a_share_of_requests_with_a_floor() {
        let p = RetryBudget { ratio: 0.2, min_per_s: 3, window_s: 10 };
        let mut b = Budget::new(Instant::now());
        let now = Instant::now();
        // Quiet sidecar: the floor (3/s over 10 s = 30) applies.
        let allowed = (0..100).filter(|_| b.try_fallback(now, &p)).count();
        assert_eq!(allowed, 30);
        // Busy sidecar: 1000 requests allow 200 fallbacks in the window.
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        for _ in 0..1000 {
            b.request(now, &p);
        }
        assert_eq!((0..1000).filter(|_| b.try_fallback(now, &p)).count(), 200);
        // The window slides: ten seconds later the budget is back.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_fallback(Instant::now(), &p));
    }
}
