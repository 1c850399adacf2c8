//! Prometheus metrics, served at `GET /metrics`.
//!
//! Labels are bounded: features and endpoints come from the config, outcomes from a fixed list.
//! The per-request families are labelled with the routing table's own `Arc<str>` names, so a
//! lookup clones a pointer instead of allocating a string.

use crate::outcome::Outcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    feature: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    feature: Arc<str>,
    endpoint: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    feature: Arc<str>,
    endpoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    endpoint: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    endpoint: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpillLabels {
    pool: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The series one served request moves (outcome `ok`), resolved once (see [`Metrics::served`]).
#[derive(Clone)]
pub struct Served {
    request: Counter,
    attempt: Counter,
    latency: Histogram,
}

impl Served {
    pub fn record(&self, elapsed: Duration) {
        self.request.inc();
        self.attempt.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// A feature's [`Served`] handles per endpoint, filled on first use. Lives in the routing table,
/// which belongs to one sidecar and so to one [`Metrics`].
#[derive(Default)]
pub struct ServedCache(std::sync::Mutex<Vec<(Arc<str>, Served)>>);

impl ServedCache {
    pub fn get(&self, endpoint: &Arc<str>, make: impl FnOnce() -> Served) -> Served {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, s)) = list.iter().find(|(e, _)| Arc::ptr_eq(e, endpoint)) {
            return s.clone();
        }
        let s = make();
        list.push((endpoint.clone(), s.clone()));
        s
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    latency: HistogramFamily<AttemptLabels>,
    ttft: HistogramFamily<EndpointLabels>,
    reloads: Family<ReloadLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    states: Family<StateLabels, prometheus_client::metrics::gauge::Gauge>,
    spills: Family<SpillLabels, Counter>,
    pool_utilisation: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pool_charged: Family<PoolLabels, Gauge>,
    pool_actual: Family<PoolLabels, Gauge>,
    pool_spill_ratio: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    credentials_missing: Family<EndpointNameLabels, Gauge>,
    dropped: Family<EndpointLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointNameLabels {
    endpoint: Arc<str>,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spillway");
        let credentials_missing = Family::<EndpointNameLabels, Gauge>::default();
        registry.register(
            "endpoint_credentials_missing",
            "1 for an endpoint skipped because its credentials are missing",
            credentials_missing.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by feature and final outcome", requests.clone());
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register("attempts", "Upstream attempts by endpoint and outcome", attempts.clone());
        let latency: HistogramFamily<AttemptLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to last byte, by the endpoint that answered",
            latency.clone(),
        );
        let ttft: HistogramFamily<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "ttft_seconds",
            "Time to first token (first stream event, or the whole reply when not streaming)",
            ttft.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("config_reloads", "Routing config reloads by result", reloads.clone());
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register("breaker_transitions", "Circuit breaker state changes by endpoint", transitions.clone());
        let states = Family::<StateLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register("breaker_state", "1 for each endpoint's current breaker state", states.clone());
        let spills = Family::<SpillLabels, Counter>::default();
        registry.register(
            "spillovers",
            "Requests moved from a PT pool to its on-demand twin, by reason",
            spills.clone(),
        );
        let pool_utilisation = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_utilisation",
            "Share of the PT budget used in the last minute, in flight included",
            pool_utilisation.clone(),
        );
        let pool_charged = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_tokens_charged",
            "Tokens charged to the pool as estimates (settled requests)",
            pool_charged.clone(),
        );
        let pool_actual = Family::<PoolLabels, Gauge>::default();
        registry.register("pool_tokens_actual", "Tokens the pool's requests really used", pool_actual.clone());
        let pool_spill_ratio = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_spill_ratio",
            "Share of the pool's eligible requests sent on-demand",
            pool_spill_ratio.clone(),
        );
        let dropped = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "translation_dropped",
            "Translated requests answered without a field the endpoint cannot carry (named in x-spillway-dropped)",
            dropped.clone(),
        );
        Metrics {
            dropped,
            pool_spill_ratio,
            credentials_missing,
            registry,
            requests,
            attempts,
            latency,
            ttft,
            reloads,
            transitions,
            states,
            spills,
            pool_utilisation,
            pool_charged,
            pool_actual,
        }
    }
}

impl Metrics {
    /// Whether `endpoint` is skipped for want of credentials.
    pub fn credentials_missing(&self, endpoint: &Arc<str>, missing: bool) {
        self.credentials_missing
            .get_or_create(&EndpointNameLabels { endpoint: endpoint.clone() })
            .set(i64::from(missing));
    }

    /// A translated request answered without some of its fields. Not labelled by field: the
    /// names are the client's, and the `x-spillway-dropped` header carries them.
    pub fn dropped(&self, feature: &Arc<str>, endpoint: &Arc<str>) {
        self.dropped.get_or_create(&EndpointLabels { feature: feature.clone(), endpoint: endpoint.clone() }).inc();
    }

    /// The metrics a request served by `endpoint` moves, to be kept: resolving three label
    /// families on every request cost ≈ 1,600 instructions.
    pub fn served(&self, feature: &Arc<str>, endpoint: &Arc<str>) -> Served {
        let ok = AttemptLabels { feature: feature.clone(), endpoint: endpoint.clone(), outcome: Outcome::Ok.as_str() };
        Served {
            request: self
                .requests
                .get_or_create(&RequestLabels { feature: feature.clone(), outcome: ok.outcome })
                .clone(),
            attempt: self.attempts.get_or_create(&ok).clone(),
            latency: self.latency.get_or_create(&ok).clone(),
        }
    }

    pub fn request(&self, feature: &Arc<str>, outcome: &'static str) {
        self.requests.get_or_create(&RequestLabels { feature: feature.clone(), outcome }).inc();
    }

    pub fn attempt(&self, feature: &Arc<str>, endpoint: &Arc<str>, outcome: Outcome) {
        self.attempts
            .get_or_create(&AttemptLabels {
                feature: feature.clone(),
                endpoint: endpoint.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn ttft(&self, feature: &Arc<str>, endpoint: &Arc<str>, d: Duration) {
        self.ttft
            .get_or_create(&EndpointLabels { feature: feature.clone(), endpoint: endpoint.clone() })
            .observe(d.as_secs_f64());
    }

    pub fn latency(&self, feature: &Arc<str>, endpoint: &Arc<str>, outcome: Outcome, d: Duration) {
        self.latency
            .get_or_create(&AttemptLabels {
                feature: feature.clone(),
                endpoint: endpoint.clone(),
                outcome: outcome.as_str(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn breaker_transition(&self, endpoint: &str, from: &'static str, to: &'static str) {
        self.transitions.get_or_create(&TransitionLabels { endpoint: endpoint.into(), from, to }).inc();
    }

    /// Sets the endpoint's state gauge: 1 for `state`, 0 for the others.
    pub fn breaker_state(&self, endpoint: &str, state: &'static str) {
        for s in ["closed", "open", "partial_open"] {
            self.states.get_or_create(&StateLabels { endpoint: endpoint.into(), state: s }).set(i64::from(s == state));
        }
    }

    /// Pool figures, refreshed when metrics are read.
    pub fn pool(&self, pool: &str, (utilisation, charged, actual, spill_ratio): (f64, u64, u64, f64)) {
        let l = PoolLabels { pool: pool.into() };
        self.pool_spill_ratio.get_or_create(&l).set(spill_ratio);
        self.pool_utilisation.get_or_create(&l).set(utilisation);
        self.pool_charged.get_or_create(&l).set(i64::try_from(charged).unwrap_or(i64::MAX));
        self.pool_actual.get_or_create(&l).set(i64::try_from(actual).unwrap_or(i64::MAX));
    }

    pub fn spilled(&self, pool: &str, why: crate::capacity::Spill) {
        self.spills.get_or_create(&SpillLabels { pool: pool.into(), reason: why.as_str() }).inc();
    }

    pub fn config_reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
