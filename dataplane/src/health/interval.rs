//! What one endpoint did since the last telemetry report: outcome counts and HDR histograms of
//! first-token time, total time and the longest inter-token gap. The reporter takes the interval
//! every few seconds and the control plane merges it into the fleet view (docs/design.md §7).
//!
//! Recording is a few integer increments under the endpoint's lock; encoding happens when the
//! reporter takes the interval, off the request path.

use spillway_api::histogram::{Lazy, micros};
use spillway_api::v1::{EndpointReport, OutcomeCounts};
use tokio::time::Duration;

/// How an attempt ended, in the control plane's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ok,
    ServerError,
    Throttled,
    Timeout,
    Reset,
    ClientCancelled,
    BadRequest,
}

/// What one endpoint did since the last report. Its histograms are allocated on first use, so
/// an idle endpoint (or a standalone sidecar, which never reports) holds none.
#[derive(Default)]
pub struct Interval {
    outcomes: OutcomeCounts,
    ttft: Lazy<u32>,
    total: Lazy<u32>,
    gap: Lazy<u32>,
}

impl Interval {
    /// Counts an attempt; latencies are kept for successful ones only, so a fast error does not
    /// flatter the percentiles.
    pub fn record(&mut self, class: Class, ttft: Option<Duration>, total: Duration, max_gap: Option<Duration>) {
        let o = &mut self.outcomes;
        match class {
            Class::Ok => o.ok += 1,
            Class::ServerError => o.server_error += 1,
            Class::Throttled => o.throttled += 1,
            Class::Timeout => o.timeout += 1,
            Class::Reset => o.reset += 1,
            Class::ClientCancelled => o.client_cancelled += 1,
            Class::BadRequest => o.bad_request += 1,
        }
        if class != Class::Ok {
            return;
        }
        if let Some(t) = ttft {
            self.ttft.record(micros(t));
        }
        self.total.record(micros(total));
        if let Some(g) = max_gap {
            self.gap.record(micros(g));
        }
    }

    fn is_empty(&self) -> bool {
        self.outcomes == OutcomeCounts::default()
    }

    /// The report of an interval that saw traffic, or `None`.
    pub fn report(&self, endpoint: &str) -> Option<EndpointReport> {
        if self.is_empty() {
            return None;
        }
        let enc =
            |h: &Lazy<u32>| h.get().map(|h| spillway_api::histogram::encode(h).unwrap_or_default()).unwrap_or_default();
        Some(EndpointReport {
            endpoint: endpoint.to_owned(),
            outcomes: Some(self.outcomes),
            ttft_hdr: enc(&self.ttft),
            total_hdr: enc(&self.total),
            inter_token_hdr: enc(&self.gap),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_reports_its_counts_and_decodable_histograms() {
        let mut i = Interval::default();
        assert!(i.report("e").is_none(), "nothing happened, nothing to say");
        for ms in 1..=100 {
            i.record(Class::Ok, Some(Duration::from_millis(ms)), Duration::from_millis(2 * ms), None);
        }
        i.record(Class::ServerError, None, Duration::from_millis(1), None);
        i.record(Class::Throttled, None, Duration::from_millis(1), None);
        i.record(Class::Timeout, None, Duration::from_secs(60), None);
        let r = i.report("e").unwrap();
        let o = r.outcomes.unwrap();
        assert_eq!((o.ok, o.server_error, o.throttled, o.timeout), (100, 1, 1, 1));
        let ttft = spillway_api::histogram::decode(&r.ttft_hdr).unwrap();
        assert_eq!(ttft.len(), 100, "only successes carry latencies");
        assert!((89_000..=91_000).contains(&ttft.value_at_quantile(0.9)), "{}", ttft.value_at_quantile(0.9));
        assert!(r.inter_token_hdr.is_empty(), "no gaps recorded, nothing encoded");
    }
}
