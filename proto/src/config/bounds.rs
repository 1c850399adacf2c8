//! The range of every numeric field and the size of every list in the routing config.
//!
//! A config is pushed to every sidecar in the fleet, so a value that passes validation must be
//! one every sidecar can hold: `breakers.window_s: 4294967295` would make each of them allocate a
//! bucket per second of a 136-year window and abort. Every bound here is checked by
//! `spillway-control check`, the control plane before it publishes and the sidecar before it
//! applies; the README's config reference lists them. Floats are checked so that NaN fails
//! (every comparison with NaN is false).

use super::{HedgeAfter, RoutingConfig};
use std::ops::RangeInclusive;

/// Breaker and retry-budget windows, in one-second buckets.
pub const WINDOW_S: RangeInclusive<u32> = 1..=600;
/// A request's deadline, its attempt timeout and latency marks: up to an hour.
pub const DEADLINE_MS: RangeInclusive<u64> = 1..=3_600_000;
/// `open_for_s` (doubled on re-trips, up to 8×) and `ramp.step_s`.
pub const OPEN_FOR_S: RangeInclusive<u32> = 1..=3_600;
/// `ramp.max_s`: a day.
pub const RAMP_MAX_S: u32 = 86_400;
/// `ramp.factor`, exclusive of 1 (a ramp that never grows never closes).
pub const RAMP_FACTOR_MAX: f64 = 100.0;
pub const MIN_REQUESTS: RangeInclusive<u32> = 1..=1_000_000;
pub const CONSECUTIVE_FAILURES: RangeInclusive<u32> = 1..=10_000;
pub const CONNECT_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
pub const MODEL_UNITS: RangeInclusive<u32> = 1..=100_000;
pub const TOKENS_PER_MINUTE_PER_UNIT: RangeInclusive<u64> = 1..=1_000_000_000;
pub const RETRY_RATIO_MAX: f64 = 10.0;
pub const RETRY_MIN_PER_S: RangeInclusive<u32> = 0..=100_000;
/// Sizes of the config's maps and lists: far above any real fleet, far below what would cost a
/// sidecar its memory limit (each endpoint holds histograms and a connection pool).
pub const MAX_ENDPOINTS: usize = 2_000;
pub const MAX_FEATURES: usize = 5_000;
pub const MAX_POOLS: usize = 1_000;
pub const MAX_BREAKERS: usize = 1_000;
pub const MAX_HIERARCHY: usize = 32;
pub const MAX_HEADERS: usize = 64;

/// Problems found, as (path, message).
pub(super) fn check(config: &RoutingConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |path: String, message: String| out.push((path, message));

    for (path, len, max) in [
        ("endpoints", config.endpoints.len(), MAX_ENDPOINTS),
        ("features", config.features.len(), MAX_FEATURES),
        ("pools", config.pools.len(), MAX_POOLS),
        ("breakers", config.breakers.len(), MAX_BREAKERS),
    ] {
        if len > max {
            bad(path.into(), format!("has {len} entries; at most {max} are allowed"));
        }
    }
    for (name, e) in &config.endpoints {
        let path = format!("endpoints.{name}");
        int(&mut bad, format!("{path}.connect_timeout_ms"), e.connect_timeout_ms, CONNECT_TIMEOUT_MS);
        if e.headers.len() > MAX_HEADERS {
            bad(format!("{path}.headers"), format!("has {} headers; at most {MAX_HEADERS}", e.headers.len()));
        }
    }
    for (name, pool) in &config.pools {
        let path = format!("pools.{name}");
        int(&mut bad, format!("{path}.model_units"), u64::from(pool.model_units), widen(MODEL_UNITS));
        int(
            &mut bad,
            format!("{path}.tokens_per_minute_per_unit"),
            pool.tokens_per_minute_per_unit,
            TOKENS_PER_MINUTE_PER_UNIT,
        );
        share(&mut bad, format!("{path}.spill_at_utilisation"), pool.spill_at_utilisation);
    }
    for (name, f) in &config.features {
        let path = format!("features.{name}");
        if f.hierarchy.len() > MAX_HIERARCHY {
            bad(format!("{path}.hierarchy"), format!("has {} tiers; at most {MAX_HIERARCHY}", f.hierarchy.len()));
        }
        int(&mut bad, format!("{path}.deadline_ms"), f.deadline_ms, DEADLINE_MS);
        let within_deadline = 1..=f.deadline_ms.clamp(*DEADLINE_MS.start(), *DEADLINE_MS.end());
        if let Some(t) = f.attempt_timeout_ms {
            int(&mut bad, format!("{path}.attempt_timeout_ms"), t, within_deadline.clone());
        }
        if let Some(HedgeAfter::Millis(ms)) = f.hedge_after_ttft_ms {
            int(&mut bad, format!("{path}.hedge_after_ttft_ms"), ms, within_deadline);
        }
        share(&mut bad, format!("{path}.hedge_max_share"), f.hedge_max_share);
    }
    for (name, b) in &config.breakers {
        let path = format!("breakers.{name}");
        int(&mut bad, format!("{path}.window_s"), u64::from(b.window_s), widen(WINDOW_S));
        int(&mut bad, format!("{path}.min_requests"), u64::from(b.min_requests), widen(MIN_REQUESTS));
        share(&mut bad, format!("{path}.error_rate"), b.error_rate);
        for (key, rule) in [("slow_ttft", &b.slow_ttft), ("slow_total", &b.slow_total), ("slow_tpot", &b.slow_tpot)] {
            if let Some(r) = rule {
                int(&mut bad, format!("{path}.{key}.over_ms"), r.over_ms, DEADLINE_MS);
                share(&mut bad, format!("{path}.{key}.rate"), r.rate);
            }
        }
        if let Some(n) = b.consecutive_failures {
            int(&mut bad, format!("{path}.consecutive_failures"), u64::from(n), widen(CONSECUTIVE_FAILURES));
        }
        int(&mut bad, format!("{path}.open_for_s"), u64::from(b.open_for_s), widen(OPEN_FOR_S));
        share(&mut bad, format!("{path}.ramp.start"), b.ramp.start);
        if !(b.ramp.factor > 1.0 && b.ramp.factor <= RAMP_FACTOR_MAX) {
            bad(
                format!("{path}.ramp.factor"),
                format!("is {}; must be in (1, {RAMP_FACTOR_MAX}] (at 1 or less the ramp never closes)", b.ramp.factor),
            );
        }
        int(&mut bad, format!("{path}.ramp.step_s"), u64::from(b.ramp.step_s), widen(OPEN_FOR_S));
        let max_from = b.ramp.step_s.clamp(*OPEN_FOR_S.start(), *OPEN_FOR_S.end());
        int(&mut bad, format!("{path}.ramp.max_s"), u64::from(b.ramp.max_s), widen(max_from..=RAMP_MAX_S));
    }
    let rb = &config.retry_budget;
    if !(0.0..=RETRY_RATIO_MAX).contains(&rb.ratio) {
        bad("retry_budget.ratio".into(), format!("is {}; must be in [0, {RETRY_RATIO_MAX}]", rb.ratio));
    }
    int(&mut bad, "retry_budget.min_per_s".into(), u64::from(rb.min_per_s), widen(RETRY_MIN_PER_S));
    int(&mut bad, "retry_budget.window_s".into(), u64::from(rb.window_s), widen(WINDOW_S));
    out
}

fn widen(r: RangeInclusive<u32>) -> RangeInclusive<u64> {
    u64::from(*r.start())..=u64::from(*r.end())
}

fn int(bad: &mut impl FnMut(String, String), path: String, v: u64, range: RangeInclusive<u64>) {
    if !range.contains(&v) {
        bad(path, format!("is {v}; must be in {}..={}", range.start(), range.end()));
    }
}

/// A share of something: in (0, 1].
fn share(bad: &mut impl FnMut(String, String), path: String, v: f64) {
    if !(v > 0.0 && v <= 1.0) {
        bad(path, format!("is {v}; must be in (0, 1]"));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    const BASE: &str =
        "endpoints: { a: { provider: openai, model: m } }\nfeatures: { f: { hierarchy: [a], breaker: b } }\n";

    fn errors(breaker: &str) -> String {
        let yaml = format!("{BASE}breakers:\n  b: {breaker}\n");
        load_str(&yaml, "t.yaml").err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_window_no_sidecar_could_hold_is_refused_naming_its_range() {
        let e = errors("{ window_s: 4294967295 }");
        assert!(e.contains("breakers.b.window_s") && e.contains("is 4294967295; must be in 1..=600"), "{e}");
        assert!(errors("{ window_s: 600 }").is_empty());
    }

    #[test]
    fn nan_and_out_of_range_floats_are_refused() {
        let e = errors("{ ramp: { factor: .nan } }");
        assert!(e.contains("breakers.b.ramp.factor") && e.contains("NaN"), "{e}");
        let e = errors("{ error_rate: .nan, slow_ttft: { over_ms: 1000, rate: .inf } }");
        assert!(e.contains("breakers.b.error_rate") && e.contains("breakers.b.slow_ttft.rate"), "{e}");
        assert!(errors("{ ramp: { factor: 101 } }").contains("ramp.factor"));
    }

    #[test]
    fn every_integer_knob_has_an_upper_bound() {
        for (knob, value) in [
            ("min_requests", "2000000"),
            ("open_for_s", "100000"),
            ("consecutive_failures", "100000"),
            ("slow_total", "{ over_ms: 99999999999, rate: 0.1 }"),
        ] {
            let e = errors(&format!("{{ {knob}: {value} }}"));
            assert!(e.contains(&format!("breakers.b.{knob}")), "{knob}: {e}");
        }
        let yaml = "endpoints: { a: { provider: openai, model: m, connect_timeout_ms: 0 } }\n\
                    features: { f: { hierarchy: [a], deadline_ms: 99999999999 } }\n\
                    retry_budget: { window_s: 100000 }\n";
        let e = load_str(yaml, "t.yaml").unwrap_err().to_string();
        for path in ["endpoints.a.connect_timeout_ms", "features.f.deadline_ms", "retry_budget.window_s"] {
            assert!(e.contains(path), "{path}: {e}");
        }
    }
}
