//! Latency distributions of one endpoint: HDR histograms (hdrhistogram) of time to first token,
//! total time and the longest gap between stream events, over a sliding period made of the
//! current and the previous histogram (so a percentile always covers between one and two
//! periods). Percentiles answer `/debug/endpoints` and `hedge_after_ttft_ms: p90`.

use tokio::time::{Duration, Instant};

/// Values are microseconds with the bounds the control plane merges with (1 µs to 10 min, two
/// significant digits, ~1 % error), allocated on first use.
use spillway_api::histogram::{Lazy, micros};

#[derive(Default)]
struct Rotating {
    current: Lazy<u32>,
    previous: Lazy<u32>,
}

impl Rotating {
    fn new() -> Self {
        Rotating::default()
    }

    fn record(&mut self, d: Duration) {
        self.current.record(micros(d));
    }

    /// The current period becomes the previous one; an idle endpoint ends up holding nothing.
    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    fn percentile(&self, q: f64) -> Option<Duration> {
        let merged = self.previous.merged(&self.current)?;
        Some(Duration::from_micros(merged.value_at_quantile(q)))
    }

    fn count(&self) -> u64 {
        self.current.len() + self.previous.len()
    }
}

pub struct Latencies {
    period: Duration,
    rotated_at: Instant,
    ttft: Rotating,
    total: Rotating,
    gap: Rotating,
}

impl Latencies {
    pub fn new(period: Duration, now: Instant) -> Self {
        Latencies { period, rotated_at: now, ttft: Rotating::new(), total: Rotating::new(), gap: Rotating::new() }
    }

    fn roll(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.rotated_at);
        if since < self.period {
            return;
        }
        for h in [&mut self.ttft, &mut self.total, &mut self.gap] {
            h.rotate();
            // Idle for two periods or more: nothing recent remains.
            if since >= self.period * 2 {
                h.rotate();
            }
        }
        self.rotated_at = now;
    }

    pub fn record(&mut self, now: Instant, ttft: Option<Duration>, total: Duration, max_gap: Option<Duration>) {
        self.roll(now);
        if let Some(t) = ttft {
            self.ttft.record(t);
        }
        self.total.record(total);
        if let Some(g) = max_gap {
            self.gap.record(g);
        }
    }

    /// The time-to-first-token quantile (`0.9` for p90), once there are `min_samples`.
    pub fn ttft_quantile(&mut self, now: Instant, q: f64, min_samples: u64) -> Option<Duration> {
        self.roll(now);
        (self.ttft.count() >= min_samples).then(|| self.ttft.percentile(q)).flatten()
    }

    pub fn summary(&mut self, now: Instant) -> serde_json::Value {
        self.roll(now);
        let ms = |h: &Rotating, q: f64| h.percentile(q).map(|d| d.as_secs_f64() * 1000.0);
        let block = |h: &Rotating| serde_json::json!({"count": h.count(), "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99)});
        serde_json::json!({"period_s": self.period.as_secs(), "ttft": block(&self.ttft), "total": block(&self.total),
            "max_inter_token_gap": block(&self.gap)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percentiles_cover_the_recent_periods_only() {
        let mut l = Latencies::new(Duration::from_secs(30), Instant::now());
        for ms in 1..=100 {
            l.record(Instant::now(), Some(Duration::from_millis(ms)), Duration::from_millis(ms * 2), None);
        }
        let p90 = l.ttft_quantile(Instant::now(), 0.9, 10).unwrap();
        assert!((Duration::from_millis(89)..=Duration::from_millis(91)).contains(&p90), "{p90:?}");
        assert_eq!(l.ttft_quantile(Instant::now(), 0.9, 1000), None, "too few samples for a verdict");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(l.ttft_quantile(Instant::now(), 0.9, 10).is_some(), "the previous period still counts");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.ttft_quantile(Instant::now(), 0.9, 1), None, "two idle periods: nothing left");
    }
}
