//! Timeline-driven resilience scenarios: a scripted fault against a sidecar at a steady request
//! rate, scored on what its clients saw.
//!
//! # Layout
//!
//! - this module: the scenarios (one feature, a provisioned primary with an on-demand backup, the
//!   breaker a new user would write) and [`run`], which starts the fakes, asks the caller for a
//!   sidecar on the scenario's config, plays the timeline and scores it;
//! - [`load`]: the steady-rate client (70 % streaming) and what each request saw;
//! - [`score`]: the score card, its acceptance checks and the per-second timeline.
//!
//! The same scenarios run two ways: in-process on tokio's paused clock (`tests/tests/resilience.rs`,
//! deterministic, in CI) and against the release binary in real time (`bench/scenarios.sh`, the
//! figures in docs/resilience.md).

pub mod load;
pub mod score;

use crate::fake::{FakeConfig, FakeProvider, Script};
use std::time::Duration;
use tokio::time::Instant;

/// Which fake a timeline event changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Primary,
    Backup,
}

/// At `at_s`, `upstream` starts behaving as `script`.
#[derive(Debug, Clone)]
pub struct Event {
    pub at_s: f64,
    pub upstream: Upstream,
    pub script: Script,
}

/// What the scenario is scored against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Surge: no failures, the PT endpoint keeps ≥ 40 % of the surge, < 5 % on-demand when calm.
    Surge,
    /// Hard outage: no failures, breaker open ≤ 1 s after the first failure, amplification ≤ 1.05.
    Outage,
    /// Brownout with hedging: p99 first token ≤ 500 ms, no failures.
    BrownoutHedged,
    /// Brownout without hedging: ≥ 95 % of traffic off the primary within 2 s, no failures.
    Brownout,
    /// Flapping: no failures, at most one re-trip per flap.
    Flapping { flaps: u32 },
    /// Recovery after an outage: a staged ramp of at least three steps, no failures.
    Recovery,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub duration_s: f64,
    /// `(from_s, requests per second)`, in order.
    pub rate: Vec<(f64, f64)>,
    /// The fault's span, for time-to-move and time-back figures.
    pub fault: (f64, f64),
    pub primary: Script,
    pub backup: Script,
    pub events: Vec<Event>,
    pub hedge_after_ms: Option<u64>,
    pub goal: Goal,
}

/// A quick answer: first token in 30 ms, ten chunks 20 ms apart.
fn quick() -> Script {
    Script {
        ttft: Duration::from_millis(30),
        chunks: 10,
        chunk_interval: Duration::from_millis(20),
        ..Script::default()
    }
}

fn failing(status: u16) -> Script {
    Script { status: Some(status), ..quick() }
}

fn at(at_s: f64, upstream: Upstream, script: Script) -> Event {
    Event { at_s, upstream, script }
}

/// The five scenarios of the acceptance list.
pub fn all() -> Vec<Scenario> {
    // Answers of ~1.5 s from a PT endpoint that takes 8 at a time.
    let long = Script {
        ttft: Duration::from_millis(100),
        chunks: 20,
        chunk_interval: Duration::from_millis(70),
        max_in_flight: Some(8),
        ..Script::default()
    };
    let long_od = Script { max_in_flight: None, ..long.clone() };
    let slow = Script { ttft: Duration::from_millis(2_500), ..quick() };
    let ten = vec![(0.0, 10.0)];
    vec![
        Scenario {
            name: "surge",
            what: "3 → 12 → 3 req/s of 1.5 s answers; the PT primary answers 429 beyond 8 in flight",
            duration_s: 40.0,
            rate: vec![(0.0, 3.0), (10.0, 12.0), (25.0, 3.0)],
            fault: (10.0, 25.0),
            primary: long,
            backup: long_od,
            events: vec![],
            hedge_after_ms: None,
            goal: Goal::Surge,
        },
        Scenario {
            name: "outage",
            what: "the primary answers 503 to everything for 20 s",
            duration_s: 35.0,
            rate: ten.clone(),
            fault: (5.0, 25.0),
            primary: quick(),
            backup: quick(),
            events: vec![at(5.0, Upstream::Primary, failing(503)), at(25.0, Upstream::Primary, quick())],
            hedge_after_ms: None,
            goal: Goal::Outage,
        },
        Scenario {
            name: "brownout-hedged",
            what: "the primary's first token goes from 30 ms to 2.5 s for 20 s (still 200); hedging at 300 ms",
            duration_s: 30.0,
            rate: ten.clone(),
            fault: (5.0, 25.0),
            primary: quick(),
            backup: quick(),
            events: vec![at(5.0, Upstream::Primary, slow.clone()), at(25.0, Upstream::Primary, quick())],
            hedge_after_ms: Some(300),
            goal: Goal::BrownoutHedged,
        },
        Scenario {
            name: "brownout",
            what: "the same brownout without hedging",
            duration_s: 30.0,
            rate: ten.clone(),
            fault: (5.0, 25.0),
            primary: quick(),
            backup: quick(),
            events: vec![at(5.0, Upstream::Primary, slow), at(25.0, Upstream::Primary, quick())],
            hedge_after_ms: None,
            goal: Goal::Brownout,
        },
        Scenario {
            name: "flapping",
            what: "the primary alternates 5 s of 503s and 5 s of health, three times",
            duration_s: 45.0,
            rate: ten.clone(),
            fault: (5.0, 35.0),
            primary: quick(),
            backup: quick(),
            events: (0..3)
                .flat_map(|k| {
                    let start = 5.0 + 10.0 * f64::from(k);
                    [at(start, Upstream::Primary, failing(503)), at(start + 5.0, Upstream::Primary, quick())]
                })
                .collect(),
            hedge_after_ms: None,
            goal: Goal::Flapping { flaps: 3 },
        },
        Scenario {
            name: "recovery",
            what: "a 15 s outage of the primary, then its return through the PARTIAL-OPEN ramp",
            duration_s: 90.0,
            rate: ten,
            fault: (5.0, 20.0),
            primary: quick(),
            backup: quick(),
            events: vec![at(5.0, Upstream::Primary, failing(503)), at(20.0, Upstream::Primary, quick())],
            hedge_after_ms: None,
            goal: Goal::Recovery,
        },
    ]
}

impl Scenario {
    /// The routing config: the issue's new user, verbatim, plus `consecutive_failures`.
    pub fn config(&self, primary: &str, backup: &str) -> String {
        let hedge = self.hedge_after_ms.map(|ms| format!(", hedge_after_ttft_ms: {ms}")).unwrap_or_default();
        format!(
            r#"
endpoints:
  primary: {{ provider: openai_compatible, base_url: "{primary}", model: p, capacity: {{ pool: pt, spill_to: backup }} }}
  backup:  {{ provider: openai_compatible, base_url: "{backup}", model: b }}
pools:
  pt: {{ model_units: 1, tokens_per_minute_per_unit: 30000 }}
features:
  chat: {{ hierarchy: [primary, backup], breaker: b, attempt_timeout_ms: 2000{hedge} }}
breakers:
  b:
    window_s: 10
    min_requests: 5
    error_rate: 0.3
    slow_ttft: {{ over_ms: 1000, rate: 0.2 }}
    consecutive_failures: 5
    open_for_s: 5
"#
        )
    }

    /// Requests per second at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.rate.iter().rev().find(|(from, _)| *from <= t).map_or(0.0, |(_, r)| *r)
    }
}

/// A sidecar the caller started on the scenario's config.
pub struct Sidecar {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Plays `s`: starts the two fakes, has `start` bring up a sidecar on the config it is given,
/// drives the load while the timeline's events change the fakes, and scores what clients saw.
pub async fn run<F, Fut, H>(s: &Scenario, start: F) -> anyhow::Result<score::Report>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Sidecar, H)>>,
{
    let mut p = FakeConfig::named("primary");
    p.script = s.primary.clone();
    let mut b = FakeConfig::named("backup");
    b.script = s.backup.clone();
    let (primary, backup) = (FakeProvider::start(p).await?, FakeProvider::start(b).await?);
    let (sidecar, handle) = start(s.config(&primary.base_url(), &backup.base_url())).await?;
    let t0 = Instant::now();
    let events = s.events.clone();
    let timeline = async {
        for e in events {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(e.at_s)).await;
            match e.upstream {
                Upstream::Primary => primary.set_script(e.script),
                Upstream::Backup => backup.set_script(e.script),
            }
        }
    };
    let (seen, ()) = tokio::join!(load::drive(s, &sidecar.url, t0), timeline);
    let metrics = load::get(&sidecar.url, "/metrics").await.unwrap_or_default();
    let hits = |f: &FakeProvider| -> Vec<f64> { f.recorded().iter().map(|r| (r.at - t0).as_secs_f64()).collect() };
    let report = score::Report::new(s, seen, hits(&primary), hits(&backup), &metrics);
    drop(handle);
    Ok(report)
}
