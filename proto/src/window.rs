//! A sliding time window of one-second buckets, the one mechanism behind the breaker's outcome
//! counts, the retry budget's tallies and a PT pool's minute of tokens on the sidecar, and the
//! fleet view's breaker counts on the control plane (both planes judge the same policy).
//!
//! The breaker's trip rules are shares ("more than 10 % of requests had a first token later than
//! 2 s"), so its window keeps counts per bucket, not latencies: recording is a few integer
//! increments, and the window's figures are a sum over at most `window_s` buckets.

use std::ops::AddAssign;
use tokio::time::Instant;

/// Counts of one bucket, or of a whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Requests that say something about health (everything but throttling).
    pub requests: u64,
    /// 5xx, timeouts, resets, malformed or truncated replies.
    pub errors: u64,
    /// Throttled: counted and exported, never a failure.
    pub throttled: u64,
    /// First token later than the policy's `slow_ttft.over_ms`.
    pub slow_ttft: u64,
    /// Whole reply later than the policy's `slow_total.over_ms`.
    pub slow_total: u64,
    /// Time per output token above the policy's `slow_tpot.over_ms`.
    pub slow_tpot: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.throttled += o.throttled;
        self.slow_ttft += o.slow_ttft;
        self.slow_total += o.slow_total;
        self.slow_tpot += o.slow_tpot;
    }
}

/// The breaker rule a window of counts breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    ErrorRate,
    SlowFirstToken,
    SlowTotal,
    SlowTpot,
}

impl Counts {
    /// These counts with `o`'s taken out (never below zero).
    pub fn without(&self, o: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(o.requests),
            errors: self.errors.saturating_sub(o.errors),
            throttled: self.throttled.saturating_sub(o.throttled),
            slow_ttft: self.slow_ttft.saturating_sub(o.slow_ttft),
            slow_total: self.slow_total.saturating_sub(o.slow_total),
            slow_tpot: self.slow_tpot.saturating_sub(o.slow_tpot),
        }
    }

    /// Failures of every kind, for ranking who contributed most.
    pub fn failures(&self) -> u64 {
        self.errors + self.slow_ttft + self.slow_total + self.slow_tpot
    }

    pub fn rate(&self, n: u64) -> f64 {
        if self.requests == 0 { 0.0 } else { n as f64 / self.requests as f64 }
    }

    /// Which rule of `p`, if any, these counts break, given at least `min_requests` (and at
    /// least one) request. The sidecar's breaker and the control plane's fleet view both judge
    /// with this.
    pub fn broken_rule(&self, p: &crate::config::BreakerPolicy, min_requests: u64) -> Option<Rule> {
        if self.requests == 0 || self.requests < min_requests {
            return None;
        }
        if self.rate(self.errors) >= p.error_rate {
            return Some(Rule::ErrorRate);
        }
        if p.slow_ttft.as_ref().is_some_and(|r| self.rate(self.slow_ttft) >= r.rate) {
            return Some(Rule::SlowFirstToken);
        }
        if p.slow_total.as_ref().is_some_and(|r| self.rate(self.slow_total) >= r.rate) {
            return Some(Rule::SlowTotal);
        }
        if p.slow_tpot.as_ref().is_some_and(|r| self.rate(self.slow_tpot) >= r.rate) {
            return Some(Rule::SlowTpot);
        }
        None
    }
}

/// Per-second buckets of `T` over the last `window_s` seconds.
pub struct Window<T> {
    epoch: Instant,
    /// `(second since epoch, value)`, indexed by second modulo the window length.
    buckets: Vec<(u64, T)>,
}

impl<T: Copy + Default + AddAssign> Window<T> {
    pub fn new(window_s: u32, now: Instant) -> Self {
        Window { epoch: now, buckets: vec![(u64::MAX, T::default()); window_s.max(1) as usize] }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Changes the window's length; what it held is dropped.
    pub fn resize(&mut self, window_s: u32) {
        let len = window_s.max(1) as usize;
        if self.buckets.len() != len {
            self.buckets = vec![(u64::MAX, T::default()); len];
        }
    }

    pub fn record(&mut self, now: Instant, v: T) {
        let sec = self.second(now);
        let len = self.buckets.len() as u64;
        let slot = &mut self.buckets[(sec % len) as usize];
        if slot.0 != sec {
            *slot = (sec, T::default());
        }
        slot.1 += v;
    }

    /// Adds `v` to the bucket of `at` (a past moment), if that second is still in the window:
    /// a correction to what was recorded then, such as an estimate replaced by the real figure.
    pub fn amend(&mut self, at: Instant, now: Instant, v: T) {
        let (sec_at, sec) = (self.second(at), self.second(now));
        let len = self.buckets.len() as u64;
        if sec_at > sec || sec - sec_at >= len {
            return;
        }
        let slot = &mut self.buckets[(sec_at % len) as usize];
        if slot.0 == sec_at {
            slot.1 += v;
        }
    }

    /// How far `now` is into its second: the current bucket covers only that much time.
    pub fn into_second(&self, now: Instant) -> std::time::Duration {
        let since = now.saturating_duration_since(self.epoch);
        since - std::time::Duration::from_secs(since.as_secs())
    }

    /// The sum over the last `window_s` seconds, the current one included.
    pub fn totals(&self, now: Instant) -> T {
        let sec = self.second(now);
        let len = self.buckets.len() as u64;
        let mut t = T::default();
        for (s, v) in &self.buckets {
            if *s != u64::MAX && *s <= sec && sec - *s < len {
                t += *v;
            }
        }
        t
    }

    pub fn clear(&mut self) {
        for b in &mut self.buckets {
            *b = (u64::MAX, T::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    fn one(errors: u64) -> Counts {
        Counts { requests: 1, errors, ..Counts::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn old_buckets_slide_out() {
        let start = Instant::now();
        let mut w = Window::new(3, start);
        w.record(start, one(1));
        w.record(start + Duration::from_millis(1500), one(0));
        assert_eq!(w.totals(start + Duration::from_millis(1999)).requests, 2);
        assert_eq!(w.totals(start + Duration::from_secs(2)).errors, 1, "second 0 is still inside a 3 s window");
        assert_eq!(w.totals(start + Duration::from_secs(3)).errors, 0, "second 0 slid out");
        assert_eq!(w.totals(start + Duration::from_secs(3)).requests, 1);
        assert_eq!(w.totals(start + Duration::from_secs(60)).requests, 0);
        // A bucket reused after a full turn starts from zero.
        w.record(start + Duration::from_secs(6), one(1));
        assert_eq!(w.totals(start + Duration::from_secs(6)), one(1));
    }
}
