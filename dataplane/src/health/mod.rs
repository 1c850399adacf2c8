//! Endpoint health: the per-endpoint circuit breaker and what the planner asks of it.
//!
//! # Layout
//!
//! - [`breaker`]: the CLOSED / OPEN / PARTIAL-OPEN state machine and its ramp;
//! - [`budget`]: the sidecar-wide retry budget that caps fallback attempts;
//! - [`latency`]: HDR histograms of first-token time, total time and inter-token gaps;
//! - [`interval`]: what the endpoint did since the last telemetry report;
//! - this module: the shared, locked handle the request path uses, with logs and metrics for
//!   every transition.

pub mod breaker;
pub mod budget;
pub mod interval;
pub mod latency;

use crate::metrics::Metrics;
use breaker::{Breaker, Observation, Phase, SlowMark, State, Transition};
use interval::{Class, Interval};
use latency::Latencies;
use serde_json::{Value, json};
use spillway_api::config::BreakerPolicy;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// One endpoint's health. Without a breaker policy the endpoint is always admitted.
pub struct Health {
    endpoint: Arc<str>,
    breaker: Option<Mutex<Breaker>>,
    latency: Mutex<Latencies>,
    interval: Mutex<Interval>,
    /// Why the control plane opened this endpoint fleet-wide, while it holds.
    fleet_reason: Mutex<Option<String>>,
    /// When an attempt here last failed, breaker or not: the retry budget and the planner's
    /// last-resort order both ask.
    last_failure: Mutex<Option<Instant>>,
}

/// Percentiles want this many samples before they are trusted (for hedging).
const MIN_SAMPLES: u64 = 20;

impl Health {
    pub fn new(endpoint: Arc<str>, policy: Option<BreakerPolicy>) -> Self {
        let period = std::time::Duration::from_secs(u64::from(policy.as_ref().map_or(30, |p| p.window_s)));
        Health {
            endpoint,
            latency: Mutex::new(Latencies::new(period, Instant::now())),
            interval: Mutex::new(Interval::default()),
            fleet_reason: Mutex::new(None),
            last_failure: Mutex::new(None),
            breaker: policy.map(|p| Mutex::new(Breaker::new(p, Instant::now()))),
        }
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Latencies> {
        self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint's recent time-to-first-token quantile, once it has enough samples.
    pub fn ttft_quantile(&self, q: f64) -> Option<std::time::Duration> {
        self.latencies().ttft_quantile(Instant::now(), q, MIN_SAMPLES)
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Breaker>> {
        self.breaker.as_ref().map(|b| b.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the planner may send the next request here. Nothing is spent until the attempt
    /// is sent ([`Health::sent`]): a plan is only a plan.
    pub fn admit(&self, metrics: &Metrics) -> bool {
        let Some(mut b) = self.lock() else { return true };
        let now = Instant::now();
        let transitions = b.tick(now);
        let admitted = b.admit();
        let state = b.state().clone();
        drop(b);
        self.report(&transitions, &state, metrics);
        admitted
    }

    /// An attempt is being sent here: a PARTIAL-OPEN endpoint's admission is used.
    pub fn sent(&self) {
        if let Some(mut b) = self.lock() {
            b.spend();
        }
    }

    /// When an attempt still waiting (for its first token if `stream`, else for its whole reply)
    /// starts counting as slow, if ever.
    pub fn slow_after(&self, stream: bool) -> Option<(std::time::Duration, SlowMark)> {
        self.lock().and_then(|b| b.slow_after(stream))
    }

    /// Whether retries aimed here add load to something failing: the breaker is not CLOSED, or
    /// the endpoint failed within the last second. The retry budget bounds exactly these.
    pub fn failing(&self) -> bool {
        let recent = self.last_failure().is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
        recent || self.lock().is_some_and(|b| *b.state() != State::Closed)
    }

    /// Whether the endpoint is PARTIAL-OPEN: its admitted attempts are recovery probes.
    pub fn probing(&self) -> bool {
        self.lock().is_some_and(|b| matches!(b.state(), State::PartialOpen { .. }))
    }

    /// An attempt is still waiting past its slow mark.
    pub fn record_slow_in_flight(&self, mark: SlowMark, metrics: &Metrics) {
        let Some(mut b) = self.lock() else { return };
        let now = Instant::now();
        let mut transitions = b.tick(now);
        transitions.extend(b.record_slow_in_flight(now, mark));
        let state = b.state().clone();
        drop(b);
        self.report(&transitions, &state, metrics);
    }

    /// Records a finished attempt. `counted_in_flight`: it was already counted as slow in flight.
    pub fn record(&self, outcome: &Observation, class: Class, counted_in_flight: bool, metrics: &Metrics) {
        let now = Instant::now();
        self.interval.lock().unwrap_or_else(|p| p.into_inner()).record(
            class,
            outcome.ttft,
            outcome.total,
            outcome.max_gap,
        );
        if !outcome.failed && !outcome.throttled {
            self.latencies().record(now, outcome.ttft, outcome.total, outcome.max_gap);
        }
        if outcome.failed {
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
        let Some(mut b) = self.lock() else { return };
        let mut transitions = b.tick(now);
        let t = if counted_in_flight { b.record_rest(now, outcome) } else { b.record(now, outcome) };
        transitions.extend(t);
        let state = b.state().clone();
        drop(b);
        self.report(&transitions, &state, metrics);
    }

    /// A client gave up on an attempt: reported to the control plane, no verdict on health.
    pub fn record_cancelled(&self, total: std::time::Duration) {
        self.interval.lock().unwrap_or_else(|p| p.into_inner()).record(Class::ClientCancelled, None, total, None);
    }

    /// Takes what happened since the last report; `None` if nothing did.
    pub fn take_interval(&self) -> Option<spillway_api::v1::EndpointReport> {
        let taken = std::mem::take(&mut *self.interval.lock().unwrap_or_else(|p| p.into_inner()));
        taken.report(&self.endpoint)
    }

    /// Applies a fleet-wide breaker directive from the control plane.
    pub fn fleet_directive(&self, open: bool, open_for: std::time::Duration, reason: &str, metrics: &Metrics) {
        let Some(mut b) = self.lock() else {
            tracing::debug!(endpoint = %self.endpoint, "fleet directive for an endpoint without a breaker policy ignored");
            return;
        };
        let now = Instant::now();
        let mut transitions = b.tick(now);
        if open {
            transitions.extend(b.fleet_open(now, open_for));
        } else {
            transitions.extend(b.fleet_release(now));
        }
        let state = b.state().clone();
        let fleet = b.is_fleet_open();
        drop(b);
        *self.fleet_reason.lock().unwrap_or_else(|p| p.into_inner()) = fleet.then(|| reason.to_owned());
        if open && transitions.iter().any(|t| t.to == Phase::Open) {
            tracing::warn!(endpoint = %self.endpoint, reason, "opened fleet-wide by the control plane");
        }
        self.report(&transitions, &state, metrics);
    }

    /// When this endpoint last failed; the planner's last resort is the one that failed longest ago.
    /// A failure that says the endpoint is down (a refused connection, a 5xx) but is not to be
    /// judged by the breaker (an operation other than generation): noted, so that retries at the
    /// endpoint in the next second ask the retry budget, and nothing more.
    pub fn note_failure(&self) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub fn last_failure(&self) -> Option<Instant> {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state_name(&self) -> &'static str {
        self.lock().map_or("closed", |b| b.state().name())
    }

    fn report(&self, transitions: &[Transition], state: &State, metrics: &Metrics) {
        for t in transitions {
            let reason = t.reason.map(|r| serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)));
            let reason = reason.flatten().unwrap_or_default();
            if t.to == Phase::Open {
                tracing::warn!(endpoint = %self.endpoint, from = t.from.name(), reason = %reason, "circuit breaker opened");
            } else {
                tracing::info!(endpoint = %self.endpoint, from = t.from.name(), to = t.to.name(), "circuit breaker moved");
            }
            metrics.breaker_transition(&self.endpoint, t.from.name(), t.to.name());
        }
        if !transitions.is_empty() {
            metrics.breaker_state(&self.endpoint, state.name());
        }
    }

    /// The `/debug/endpoints` view of this endpoint.
    pub fn debug(&self, metrics: &Metrics) -> Value {
        let latency = self.latencies().summary(Instant::now());
        let Some(mut b) = self.lock() else {
            return json!({"endpoint": &*self.endpoint, "state": "closed", "breaker": null, "latency": latency});
        };
        let now = Instant::now();
        // States move lazily, on the next request; the view shows where the endpoint is now (an
        // OPEN period that has run out is PARTIAL-OPEN), and the move is logged and counted.
        let transitions = b.tick(now);
        if !transitions.is_empty() {
            let state = b.state().clone();
            self.report(&transitions, &state, metrics);
        }
        let w = b.window(now);
        let (open_for_s, ramp_share) = match b.state() {
            State::Open { until } => (Some(until.saturating_duration_since(now).as_secs_f64()), None),
            State::PartialOpen { share, .. } => (None, Some(*share)),
            State::Closed => (None, None),
        };
        json!({
            "endpoint": &*self.endpoint,
            "state": b.state().name(),
            "reason": b.reason(),
            "fleet_reason": b
                .is_fleet_open()
                .then(|| self.fleet_reason.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .flatten(),
            "open_for_s": open_for_s,
            "ramp_share": ramp_share,
            "window": {
                "seconds": b.policy().window_s,
                "requests": w.requests, "errors": w.errors, "throttled": w.throttled,
                "slow_ttft": w.slow_ttft, "slow_total": w.slow_total, "slow_tpot": w.slow_tpot,
                "error_rate": w.rate(w.errors), "slow_ttft_rate": w.rate(w.slow_ttft), "slow_total_rate": w.rate(w.slow_total),
                "slow_tpot_rate": w.rate(w.slow_tpot),
            },
            "latency": latency,
        })
    }
}
