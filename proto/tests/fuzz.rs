//! Fuzzing the routing config loader (proptest on the stable toolchain): YAML a platform team —
//! or an attacker who reached the admin API — might write. Real configs mutated byte by byte,
//! and every number swapped for an extreme one. The properties: the loader never panics, and a
//! config it accepts has every number inside its documented range, so nothing it lets through
//! can make a sidecar allocate without bound (`window_s: 4294967295` once aborted the fleet).
//!
//! `SPILLWAY_FUZZ_CASES` cases per property (default 512).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spillway_api::config::bounds::{DEADLINE_MS, WINDOW_S};
use spillway_api::config::load_str;

const BASE: &str = "endpoints:
  pt: { provider: bedrock, region: us-east-1, model: anthropic.claude-3-5-sonnet, capacity: { pool: sonnet, spill_to: od } }
  od: { provider: bedrock, region: us-west-2, model: anthropic.claude-3-5-sonnet, connect_timeout_ms: 2000 }
  oa: { provider: openai, model: gpt-4o-mini, auth: { kind: api_key, env: OPENAI_API_KEY } }
pools:
  sonnet: { model_units: 2, tokens_per_minute_per_unit: 30000, spill_at_utilisation: 0.9 }
breakers:
  b:
    window_s: 30
    min_requests: 20
    error_rate: 0.5
    open_for_s: 30
    slow_ttft: { over_ms: 2000, rate: 0.5 }
    ramp: { start: 0.1, factor: 2.0, step_s: 10, max_s: 600 }
retry_budget: { ratio: 0.2, min_per_s: 3, window_s: 10 }
features:
  search:
    hierarchy: [pt, oa]
    breaker: b
    deadline_ms: 30000
    attempt_timeout_ms: 10000
    hedge_after_ttft_ms: 1500
    hedge_max_share: 0.1
";

fn runner() -> TestRunner {
    let cases = std::env::var("SPILLWAY_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[test]
fn the_base_config_loads() {
    load_str(BASE, "base.yaml").unwrap();
}

#[test]
fn mutated_yaml_never_panics_the_loader() {
    let len = BASE.len();
    let edits = (
        proptest::collection::vec((0..len, any::<u8>()), 1..8),
        proptest::collection::vec((0..len, "[ :\\-\\[\\]{}#&*!|>'\"%@`,?0-9a-z\n]{1,4}"), 0..4),
        proptest::option::of(0..len),
    );
    runner()
        .run(&edits, |(flips, inserts, cut)| {
            let mut b = BASE.as_bytes().to_vec();
            for (i, v) in flips {
                b[i] ^= v;
            }
            for (i, s) in inserts {
                let at = i.min(b.len());
                b.splice(at..at, s.bytes());
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            let _ = load_str(&String::from_utf8_lossy(&b), "fuzz.yaml");
            Ok(())
        })
        .unwrap();
}

/// Every number in the config, each replaced by one of these or left alone.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "4294967295",
    "18446744073709551615",
    "1e308",
    "-0.0",
    ".nan",
    ".inf",
    "-.inf",
    "0.0000001",
    "5000000",
    "2147483648",
    "1.5",
    "999999999999",
];

#[test]
fn extreme_numbers_are_refused_or_within_their_documented_range() {
    let numbers: Vec<(usize, usize)> = {
        let b = BASE.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            // A number token: digits (and a dot) right after ": " or "[".
            if b[i].is_ascii_digit() && i > 0 && matches!(b[i - 1], b' ' | b'[') && (i < 2 || b[i - 2] == b':') {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                out.push((start, i));
            }
            i += 1;
        }
        out
    };
    assert!(numbers.len() >= 15, "{numbers:?}");
    // A few numbers at a time, so that some configs pass and the bounds are checked on them.
    let picks = proptest::collection::vec(proptest::option::weighted(0.1, 0..EXTREMES.len()), numbers.len());
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner()
        .run(&picks, |picks| {
            let mut text = String::new();
            let mut from = 0;
            for ((start, end), pick) in numbers.iter().zip(&picks) {
                text.push_str(&BASE[from..*start]);
                text.push_str(pick.map_or(&BASE[*start..*end], |p| EXTREMES[p]));
                from = *end;
            }
            text.push_str(&BASE[from..]);
            let loaded = load_str(&text, "fuzz.yaml");
            let counter = if loaded.is_ok() { &accepted } else { &refused };
            counter.set(counter.get() + 1);
            if let Ok(c) = loaded {
                // Accepted: the bounds the sidecar relies on hold.
                for b in c.breakers.values() {
                    prop_assert!(WINDOW_S.contains(&b.window_s), "window_s {}", b.window_s);
                }
                for f in c.features.values() {
                    prop_assert!(DEADLINE_MS.contains(&f.deadline_ms), "deadline_ms {}", f.deadline_ms);
                }
                let json = serde_json::to_string(&c).unwrap();
                prop_assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
            }
            Ok(())
        })
        .unwrap();
    assert!(accepted.get() > 0 && refused.get() > 0, "accepted {}, refused {}", accepted.get(), refused.get());
}
