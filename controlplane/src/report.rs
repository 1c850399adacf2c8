//! The shape a sidecar's telemetry report must have before any of it is merged.
//!
//! Identity settles *who* reports; these bounds settle *how much* one report can weigh. A real
//! sidecar serves at most a few ten thousand requests a second and encodes a histogram in a few
//! KiB, so a part claiming more is refused (and counted), not merged: one compromised pod cannot
//! outvote the fleet with a single forged report.

use crate::metrics::Refused;
use spillway_api::v1::{EndpointReport, FeedbackSummary};
use std::time::Duration;

/// More than any sidecar serves (the release sidecar saturates near 12,000 req/s on 2 cores).
pub const MAX_REQUESTS_PER_S: u64 = 50_000;
/// A V2-compressed HDR histogram of one interval is a few KiB.
pub const MAX_HISTOGRAM_BYTES: usize = 64 * 1024;
/// Longest interval a report may claim; a longer claim is taken as this long.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// A report's first interval after connecting may be short: at least a second is assumed.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The interval a report covers, clamped to what a sidecar can mean.
pub fn interval(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The most requests (or feedback scores) one sidecar can have seen in `interval`.
fn ceiling(interval: Duration) -> u64 {
    MAX_REQUESTS_PER_S * interval.as_secs().max(1)
}

/// One endpoint's part: counts a sidecar could have seen, histograms of a plausible size.
pub fn check_endpoint(e: &EndpointReport, interval: Duration) -> Result<(), Refused> {
    let o = e.outcomes.unwrap_or_default();
    let total = [o.ok, o.server_error, o.throttled, o.timeout, o.reset, o.client_cancelled, o.bad_request]
        .iter()
        .try_fold(0u64, |a, n| a.checked_add(*n));
    if total.is_none_or(|t| t > ceiling(interval)) {
        return Err(Refused::OutOfBounds);
    }
    if [&e.ttft_hdr, &e.total_hdr, &e.inter_token_hdr].iter().any(|h| h.len() > MAX_HISTOGRAM_BYTES) {
        return Err(Refused::OutOfBounds);
    }
    Ok(())
}

/// One feedback sum: at most a score per request, each score in [0, 1].
pub fn check_feedback(f: &FeedbackSummary, interval: Duration) -> Result<(), Refused> {
    let scores_fit = f.score_sum.is_finite() && f.score_sum >= 0.0 && f.score_sum <= f.count as f64;
    if f.count > ceiling(interval) || !scores_fit {
        return Err(Refused::OutOfBounds);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_api::v1::OutcomeCounts;

    #[test]
    fn forged_weights_are_refused() {
        let ten_s = interval(10_000);
        let e = |ok: u64, hdr: usize| EndpointReport {
            endpoint: "e".into(),
            outcomes: Some(OutcomeCounts { ok, ..Default::default() }),
            ttft_hdr: vec![0; hdr],
            ..Default::default()
        };
        assert!(check_endpoint(&e(120_000, 3_000), ten_s).is_ok());
        assert_eq!(check_endpoint(&e(500_001, 0), ten_s), Err(Refused::OutOfBounds));
        assert_eq!(check_endpoint(&e(1, MAX_HISTOGRAM_BYTES + 1), ten_s), Err(Refused::OutOfBounds));
        let overflow = EndpointReport {
            outcomes: Some(OutcomeCounts { ok: u64::MAX, server_error: 2, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(check_endpoint(&overflow, ten_s), Err(Refused::OutOfBounds));
        let f = |count: u64, score_sum: f64| FeedbackSummary { count, score_sum, ..Default::default() };
        assert!(check_feedback(&f(10, 7.5), ten_s).is_ok());
        for bad in [f(10, 11.0), f(10, -1.0), f(10, f64::NAN), f(10, f64::INFINITY), f(10_000_000, 1.0)] {
            assert_eq!(check_feedback(&bad, ten_s), Err(Refused::OutOfBounds), "{bad:?}");
        }
        assert_eq!(interval(0), MIN_INTERVAL);
        assert_eq!(interval(u64::MAX), MAX_INTERVAL);
    }
}
