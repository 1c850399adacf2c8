//! The control plane's own Prometheus metrics, served at `GET /metrics` on the health port: who
//! was refused and why, and how full the maps that sidecars' reports grow are, with what they
//! evicted. Every label value comes from a fixed list.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A map whose size sidecars drive.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Tracked {
    /// Per-node status records (`GET /v1/nodes`).
    Nodes,
    /// Zones of one endpoint in the fleet view.
    Zones,
    /// (feature, endpoint) feedback trends.
    Feedback,
}

/// Why a report or part of one was not taken.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refused {
    /// The endpoint, pool or feature is not in the config in force.
    Unknown,
    /// Outside the bounds a real sidecar stays in (counts, sizes, scores).
    OutOfBounds,
    /// A histogram that does not decode.
    Corrupt,
}

/// Why a stream was refused before its first message.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, a malformed one, or one the API server refused.
    Denied,
    /// The API server could not be asked (the sidecar retries).
    ReviewFailed,
}

impl Tracked {
    fn label(self) -> &'static str {
        match self {
            Tracked::Nodes => "nodes",
            Tracked::Zones => "zones",
            Tracked::Feedback => "feedback",
        }
    }
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::OutOfBounds => "out_of_bounds",
            Refused::Corrupt => "corrupt",
        }
    }
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Denied => "denied",
            AuthFailure::ReviewFailed => "review_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    tracked: Family<MapLabels, Gauge>,
    evicted: Family<MapLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    leader_epoch: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spillway_control");
        let tracked = Family::<MapLabels, Gauge>::default();
        registry.register("tracked_entries", "Entries in a map that sidecar reports grow", tracked.clone());
        let evicted = Family::<MapLabels, Counter>::default();
        registry.register("evicted_entries", "Entries evicted to keep a map within its bound", evicted.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register("report_parts_refused", "Parts of sidecar reports not merged, by reason", refused.clone());
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "stream_auth_failures",
            "gRPC streams refused before their first message, by reason",
            auth_failures.clone(),
        );
        let leader_epoch = Gauge::default();
        registry.register(
            "leader_epoch",
            "The epoch this replica leads the fleet-wide work with; 0 while it follows",
            leader_epoch.clone(),
        );
        Metrics { registry, tracked, evicted, refused, auth_failures, leader_epoch }
    }
}

impl Metrics {
    pub fn set_tracked(&self, map: Tracked, n: usize) {
        self.tracked.get_or_create(&MapLabels { map: map.label() }).set(n as i64);
    }

    pub fn evicted(&self, map: Tracked, n: usize) {
        if n > 0 {
            self.evicted.get_or_create(&MapLabels { map: map.label() }).inc_by(n as u64);
        }
    }

    pub fn refused(&self, reason: Refused) {
        self.refused.get_or_create(&ReasonLabels { reason: reason.label() }).inc();
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.label() }).inc();
    }

    pub fn set_leading(&self, epoch: Option<u64>) {
        self.leader_epoch.set(epoch.map_or(0, |e| i64::try_from(e).unwrap_or(i64::MAX)));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
