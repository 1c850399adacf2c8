//! The sidecar-wide retry budget: fallback attempts may be at most a share of live requests.
//!
//! Without it an outage multiplies load: every request that fails at the primary is sent again,
//! to a backup that may be struggling for the same reason. Counts live in one-second buckets
//! over `window_s`; a fallback is allowed while the window's fallbacks stay under
//! `max(ratio × requests, min_per_s × window_s)`.

use spillway_api::config::RetryBudget;
use tokio::time::Instant;

pub struct Budget {
    epoch: Instant,
    /// `(second, requests, fallbacks)` indexed by second modulo the window length.
    buckets: Vec<(u64, u64, u64)>,
}

impl Budget {
    pub fn new(now: Instant) -> Self {
        Budget { epoch: now, buckets: Vec::new() }
    }

    fn slot(&mut self, now: Instant, window_s: u32) -> &mut (u64, u64, u64) {
        let len = window_s.max(1) as usize;
        if self.buckets.len() != len {
            self.buckets = vec![(u64::MAX, 0, 0); len];
        }
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let slot = &mut self.buckets[(sec % len as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && *s <= sec && sec - *s < len)
            .fold((0, 0), |(r, f), (_, br, bf)| (r + br, f + bf))
    }

    /// Counts a new request.
    pub fn request(&mut self, now: Instant, policy: &RetryBudget) {
        self.slot(now, policy.window_s).1 += 1;
    }

    /// Whether one more fallback attempt fits; if so it is counted.
    pub fn try_fallback(&mut self, now: Instant, policy: &RetryBudget) -> bool {
        self.slot(now, policy.window_s);
        let (requests, fallbacks) = self.totals(now);
        let allowed = (policy.ratio * requests as f64).max(f64::from(policy.min_per_s) * f64::from(policy.window_s));
        if (fallbacks as f64) < allowed {
            self.slot(now, policy.window_s).2 += 1;
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
