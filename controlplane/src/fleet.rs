//! The fleet view: every sidecar's interval reports merged per endpoint, and per endpoint and
//! zone — outcome counts, HDR histograms of first-token time, total time and inter-token gaps
//! (percentiles over the last one to two periods) — and the endpoint's breaker policy judged on
//! the merged counts.
//!
//! Why judge centrally: a breaker needs `min_requests` in its window, and a fleet of low-volume
//! sidecars may each see three requests while together they see three hundred. When the merged
//! window breaks the policy, the endpoint is opened fleet-wide for `open_for_s` (doubling on
//! consecutive trips, like the local breaker); every sidecar then ramps it back up on its own.

use crate::metrics::Refused;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spillway_api::config::{BreakerPolicy, RoutingConfig};
use spillway_api::histogram;
use spillway_api::v1::{BreakerDirective, EndpointReport, OutcomeCounts};
use spillway_api::window::{Counts, Rule, Window};
use std::collections::HashMap;
use tokio::time::{Duration, Instant};

/// The longest fleet-wide OPEN, as a multiple of `open_for_s` (the sidecar's own cap).
const MAX_OPEN_FACTOR: u32 = 8;

/// Zones kept apart per endpoint. A zone costs three pairs of HDR histograms (≈130 KiB), and
/// real clusters have a handful; reports from zones past this bound are filed under
/// [`OVERFLOW_ZONE`], so no sender can grow the view by inventing zone names.
pub const MAX_ZONES: usize = 32;
pub const OVERFLOW_ZONE: &str = "(other zones)";

/// A latency distribution over the current and the previous period.
struct Rotating {
    current: Histogram<u64>,
    previous: Histogram<u64>,
}

impl Rotating {
    fn new() -> Self {
        Rotating { current: histogram::new(), previous: histogram::new() }
    }

    fn rotate(&mut self, twice: bool) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        if twice {
            self.previous.reset();
        }
    }

    /// Adds both periods of `other` into this one's (a view summing zones).
    fn absorb(&mut self, other: &Rotating) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.current.add(&other.current);
        let _ = self.previous.add(&other.previous);
    }

    fn summary(&self) -> Value {
        let mut h = self.previous.clone();
        let _ = h.add(&self.current);
        if h.is_empty() {
            return json!({"count": 0});
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        json!({"count": h.len(), "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0})
    }
}

fn add_outcomes(into: &mut OutcomeCounts, o: &OutcomeCounts) {
    into.ok += o.ok;
    into.server_error += o.server_error;
    into.throttled += o.throttled;
    into.timeout += o.timeout;
    into.reset += o.reset;
    into.client_cancelled += o.client_cancelled;
    into.bad_request += o.bad_request;
}

/// What one endpoint (or one endpoint in one zone) did over the last one to two periods.
struct Stats {
    outcomes: [OutcomeCounts; 2],
    ttft: Rotating,
    total: Rotating,
    gap: Rotating,
}

impl Stats {
    fn new() -> Self {
        Stats { outcomes: Default::default(), ttft: Rotating::new(), total: Rotating::new(), gap: Rotating::new() }
    }

    fn rotate(&mut self, twice: bool) {
        self.outcomes = [OutcomeCounts::default(), if twice { OutcomeCounts::default() } else { self.outcomes[0] }];
        for r in [&mut self.ttft, &mut self.total, &mut self.gap] {
            r.rotate(twice);
        }
    }

    /// Nothing reported in either period: the zone can be forgotten.
    fn is_idle(&self) -> bool {
        self.outcomes.iter().all(|o| *o == OutcomeCounts::default())
            && [&self.ttft, &self.total, &self.gap].iter().all(|r| r.current.is_empty() && r.previous.is_empty())
    }

    fn add(&mut self, o: &OutcomeCounts, hists: &[Option<Histogram<u64>>; 3]) {
        add_outcomes(&mut self.outcomes[0], o);
        for (r, h) in [&mut self.ttft, &mut self.total, &mut self.gap].into_iter().zip(hists) {
            if let Some(h) = h {
                // Decoded histograms carry the shared bounds; a foreign one that does not fit is
                // dropped rather than allowed to poison the view.
                let _ = r.current.add(h);
            }
        }
    }

    /// The sum of several zones' stats; built only for a view, so that merging a report touches
    /// one set of histograms (its zone), not two.
    fn sum<'a>(zones: impl Iterator<Item = &'a Stats>) -> Stats {
        let mut all = Stats::new();
        for z in zones {
            for i in 0..2 {
                add_outcomes(&mut all.outcomes[i], &z.outcomes[i]);
            }
            all.ttft.absorb(&z.ttft);
            all.total.absorb(&z.total);
            all.gap.absorb(&z.gap);
        }
        all
    }

    fn summary(&self) -> Value {
        let mut o = self.outcomes[0];
        add_outcomes(&mut o, &self.outcomes[1]);
        let requests = o.ok + o.server_error + o.timeout + o.reset + o.bad_request;
        let rate = |n: u64| if requests == 0 { 0.0 } else { n as f64 / requests as f64 };
        json!({
            "outcomes": {"ok": o.ok, "server_error": o.server_error, "throttled": o.throttled, "timeout": o.timeout,
                "reset": o.reset, "client_cancelled": o.client_cancelled, "bad_request": o.bad_request},
            "error_rate": rate(o.server_error + o.timeout + o.reset),
            "throttle_rate": if requests + o.throttled == 0 { 0.0 } else { o.throttled as f64 / (requests + o.throttled) as f64 },
            "ttft": self.ttft.summary(), "total": self.total.summary(), "max_inter_token_gap": self.gap.summary(),
        })
    }
}

struct FleetOpen {
    until: Instant,
    reason: String,
}

/// A fleet-wide open (or a trip count) as a leader hands it to the next.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenCheckpoint {
    pub endpoint: String,
    pub remaining_ms: u64,
    pub reason: String,
    pub trips: u32,
}

struct EndpointView {
    /// Per zone; the endpoint's fleet-wide figures are their sum.
    zones: HashMap<String, Stats>,
    /// Breaker counts over the policy's window, merged from every sidecar.
    window: Window<Counts>,
    /// Sidecars that reported the endpoint in the current period.
    /// What each sidecar added to the window this period: a fleet-wide verdict must hold
    /// without the largest contributor, so no single sidecar — lying or just unlucky — opens an
    /// endpoint for everyone.
    reporters: HashMap<String, Counts>,
    open: Option<FleetOpen>,
    /// Consecutive fleet-wide trips (reset after a healthy window).
    trips: u32,
    healthy_since: Instant,
}

impl EndpointView {
    /// An endpoint the fleet has not heard of yet, judged over `window_s` seconds.
    fn new(window_s: u32, now: Instant) -> Self {
        EndpointView {
            zones: HashMap::new(),
            window: Window::new(window_s, now),
            reporters: Default::default(),
            open: None,
            trips: 0,
            healthy_since: now,
        }
    }
}

pub struct Fleet {
    /// Percentiles cover the last one to two periods.
    period: Duration,
    rotated_at: Instant,
    endpoints: HashMap<String, EndpointView>,
    policies: HashMap<String, BreakerPolicy>,
    /// The config's endpoints, once a config is known.
    known: Option<std::collections::HashSet<String>>,
    /// Ends of fleet-wide opens decided since the last tick, to tell sidecars once.
    released: Vec<String>,
    decoder: histogram::Decoder,
    evicted_zones: usize,
}

/// An endpoint opened fleet-wide by [`Fleet::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub endpoint: String,
    pub reason: String,
    pub open_for: Duration,
}

impl Fleet {
    pub fn new(period: Duration, now: Instant) -> Self {
        Fleet {
            period,
            rotated_at: now,
            endpoints: HashMap::new(),
            policies: HashMap::new(),
            known: None,
            released: Vec::new(),
            decoder: histogram::Decoder::default(),
            evicted_zones: 0,
        }
    }

    /// Takes the endpoints and their breaker policies from a new config; endpoints that left it
    /// are forgotten.
    pub fn set_config(&mut self, config: &RoutingConfig) {
        let mut policies = HashMap::new();
        for f in config.features.values() {
            if let Some(p) = f.breaker.as_ref().and_then(|b| config.breakers.get(b)) {
                for e in &f.hierarchy {
                    policies.insert(e.clone(), p.clone());
                }
            }
        }
        self.endpoints.retain(|name, _| config.endpoints.contains_key(name));
        for (name, v) in &mut self.endpoints {
            if let Some(p) = policies.get(name) {
                v.window.resize(p.window_s);
            }
        }
        self.policies = policies;
        self.known = Some(config.endpoints.keys().cloned().collect());
    }

    fn roll(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.rotated_at);
        if since < self.period {
            return;
        }
        let twice = since >= self.period * 2;
        for v in self.endpoints.values_mut() {
            v.zones.values_mut().for_each(|z| z.rotate(twice));
            let before = v.zones.len();
            v.zones.retain(|_, z| !z.is_idle());
            self.evicted_zones += before - v.zones.len();
            v.reporters.clear();
        }
        self.rotated_at = now;
    }

    /// Zones tracked over all endpoints, and zones forgotten for being idle so far.
    pub fn zone_counts(&self) -> (usize, usize) {
        (self.endpoints.values().map(|v| v.zones.len()).sum(), self.evicted_zones)
    }

    /// Merges one sidecar's report of one endpoint. A report naming an endpoint the config does
    /// not have, or carrying a histogram that does not decode, is refused with the reason.
    pub fn merge(&mut self, node: &str, zone: &str, r: &EndpointReport, now: Instant) -> Result<(), Refused> {
        self.roll(now);
        if self.known.as_ref().is_none_or(|k| !k.contains(&r.endpoint)) {
            // A sidecar still on an older snapshot: its figures describe nothing routed now.
            return Err(Refused::Unknown);
        }
        let policy = self.policies.get(&r.endpoint);
        let decoder = &mut self.decoder;
        let mut decode = |b: &[u8]| -> Result<Option<Histogram<u64>>, Refused> {
            if b.is_empty() { Ok(None) } else { decoder.decode(b).map(Some).map_err(|_| Refused::Corrupt) }
        };
        let hists = [decode(&r.ttft_hdr)?, decode(&r.total_hdr)?, decode(&r.inter_token_hdr)?];
        let o = r.outcomes.unwrap_or_default();
        let above = |h: &Option<Histogram<u64>>, over_ms: Option<u64>| match (h, over_ms) {
            (Some(h), Some(ms)) if h.max() > ms * 1000 => h.count_between(ms * 1000 + 1, h.max()),
            _ => 0,
        };
        let counts = Counts {
            requests: o.ok + o.server_error + o.timeout + o.reset + o.bad_request,
            errors: o.server_error + o.timeout + o.reset,
            throttled: o.throttled,
            slow_ttft: above(&hists[0], policy.and_then(|p| p.slow_ttft.as_ref()).map(|r| r.over_ms)),
            slow_total: above(&hists[1], policy.and_then(|p| p.slow_total.as_ref()).map(|r| r.over_ms)),
            // Reports carry no per-token histogram: time per output token is judged per sidecar.
            slow_tpot: 0,
        };
        let window_s = policy.map_or(30, |p| p.window_s);
        let v = self.endpoints.entry(r.endpoint.clone()).or_insert_with(|| EndpointView::new(window_s, now));
        let zone = if v.zones.contains_key(zone) || v.zones.len() < MAX_ZONES - 1 { zone } else { OVERFLOW_ZONE };
        match v.zones.get_mut(zone) {
            Some(z) => z.add(&o, &hists),
            None => v.zones.entry(zone.to_owned()).or_insert_with(Stats::new).add(&o, &hists),
        }
        if v.open.is_none() {
            v.window.record(now, counts);
            match v.reporters.get_mut(node) {
                Some(c) => *c += counts,
                None => {
                    v.reporters.insert(node.to_owned(), counts);
                }
            }
        } else if !v.reporters.contains_key(node) {
            v.reporters.insert(node.to_owned(), Counts::default());
        }
        Ok(())
    }

    /// Judges every endpoint's merged window against its policy; returns the endpoints opened
    /// fleet-wide just now.
    pub fn evaluate(&mut self, now: Instant) -> Vec<Opened> {
        self.roll(now);
        let mut opened = Vec::new();
        for (name, v) in &mut self.endpoints {
            let Some(p) = self.policies.get(name) else { continue };
            if let Some(o) = &v.open {
                if now >= o.until {
                    v.open = None;
                    v.healthy_since = now;
                }
                continue;
            }
            let top = v.reporters.values().max_by_key(|c| c.failures()).copied().unwrap_or_default();
            let totals = v.window.totals(now).without(&top);
            let Some(rule) = totals.broken_rule(p, u64::from(p.min_requests)) else {
                if now.saturating_duration_since(v.healthy_since) >= Duration::from_secs(u64::from(p.window_s)) {
                    v.trips = 0;
                }
                continue;
            };
            let factor = 2u32.saturating_pow(v.trips).min(MAX_OPEN_FACTOR);
            v.trips = v.trips.saturating_add(1);
            let open_for = Duration::from_secs(u64::from(p.open_for_s) * u64::from(factor));
            let (what, share) = match rule {
                Rule::ErrorRate => ("error rate", totals.rate(totals.errors)),
                Rule::SlowFirstToken => ("slow first tokens", totals.rate(totals.slow_ttft)),
                Rule::SlowTotal => ("slow responses", totals.rate(totals.slow_total)),
                Rule::SlowTpot => ("slow output tokens", totals.rate(totals.slow_tpot)),
            };
            let reason = format!(
                "fleet {what} {:.0} % over {} s ({} requests from {} sidecars, the largest contributor left out)",
                share * 100.0,
                p.window_s,
                totals.requests,
                v.reporters.len()
            );
            tracing::warn!(endpoint = %name, %reason, open_for_s = open_for.as_secs(), "opening fleet-wide");
            v.window.clear();
            v.open = Some(FleetOpen { until: now + open_for, reason: reason.clone() });
            opened.push(Opened { endpoint: name.clone(), reason, open_for });
        }
        opened
    }

    /// What a new leader must not forget: the fleet-wide opens in force and the trip counts that
    /// double the next one.
    pub fn checkpoint(&self, now: Instant) -> Vec<OpenCheckpoint> {
        let mut out: Vec<OpenCheckpoint> = self
            .endpoints
            .iter()
            .filter(|(_, v)| v.trips > 0 || v.open.as_ref().is_some_and(|o| o.until > now))
            .map(|(name, v)| OpenCheckpoint {
                endpoint: name.clone(),
                remaining_ms: v.open.as_ref().map_or(0, |o| o.until.saturating_duration_since(now).as_millis() as u64),
                reason: v.open.as_ref().map(|o| o.reason.clone()).unwrap_or_default(),
                trips: v.trips,
            })
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// Takes over a predecessor's opens and trip counts, `elapsed` after it wrote them.
    pub fn restore(&mut self, opens: &[OpenCheckpoint], elapsed: Duration, now: Instant) {
        for o in opens {
            if self.known.as_ref().is_none_or(|k| !k.contains(&o.endpoint)) {
                continue;
            }
            let window_s = self.policies.get(&o.endpoint).map_or(30, |p| p.window_s);
            let v = self.endpoints.entry(o.endpoint.clone()).or_insert_with(|| EndpointView::new(window_s, now));
            v.trips = v.trips.max(o.trips);
            let left = Duration::from_millis(o.remaining_ms).saturating_sub(elapsed);
            if !left.is_zero() {
                v.open = Some(FleetOpen { until: now + left, reason: o.reason.clone() });
            }
        }
    }

    /// Ends a fleet-wide open early (the platform team's call); sidecars start their ramp.
    pub fn release(&mut self, endpoint: &str, now: Instant) -> bool {
        let Some(v) = self.endpoints.get_mut(endpoint).filter(|v| v.open.is_some()) else { return false };
        v.open = None;
        v.healthy_since = now;
        self.released.push(endpoint.to_owned());
        true
    }

    /// What every sidecar is told on this tick: each fleet-wide open with the time it has left,
    /// and the releases decided since the last tick.
    pub fn directives(&mut self, now: Instant) -> Vec<BreakerDirective> {
        let mut out: Vec<BreakerDirective> = self
            .endpoints
            .iter()
            .filter_map(|(name, v)| {
                let o = v.open.as_ref().filter(|o| o.until > now)?;
                Some(BreakerDirective {
                    endpoint: name.clone(),
                    open: true,
                    reason: o.reason.clone(),
                    open_for_ms: u64::try_from(o.until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        out.extend(self.released.drain(..).map(|endpoint| BreakerDirective {
            endpoint,
            open: false,
            reason: "released by the platform team".into(),
            open_for_ms: 0,
        }));
        out
    }

    /// The admin API's view: per endpoint, the fleet figures, its breaker verdict, and per zone.
    pub fn view(&mut self, now: Instant) -> Value {
        self.roll(now);
        let mut names: Vec<&String> = self.endpoints.keys().collect();
        names.sort();
        let endpoints: Vec<Value> = names
            .into_iter()
            .map(|name| {
                let v = &self.endpoints[name];
                let w = v.window.totals(now);
                let mut zones: Vec<(&String, &Stats)> = v.zones.iter().collect();
                zones.sort_by_key(|(z, _)| *z);
                let zones: serde_json::Map<String, Value> = zones
                    .into_iter()
                    .map(|(z, s)| (if z.is_empty() { "unknown".to_owned() } else { z.clone() }, s.summary()))
                    .collect();
                let mut s = Stats::sum(v.zones.values()).summary();
                s["endpoint"] = json!(name);
                s["sidecars_reporting"] = json!(v.reporters.len());
                s["fleet_breaker"] = json!({
                    "policy": self.policies.contains_key(name),
                    "state": if v.open.as_ref().is_some_and(|o| o.until > now) { "open" } else { "closed" },
                    "reason": v.open.as_ref().map(|o| &o.reason),
                    "open_for_s": v.open.as_ref().map(|o| o.until.saturating_duration_since(now).as_secs_f64()),
                    "window": {"requests": w.requests, "errors": w.errors, "throttled": w.throttled,
                        "slow_ttft": w.slow_ttft, "slow_total": w.slow_total},
                });
                s["zones"] = Value::Object(zones);
                s
            })
            .collect();
        json!({"period_s": self.period.as_secs(), "endpoints": endpoints})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_api::config::load_str;

    const CONFIG: &str = "
endpoints:
  a: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
  b: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
breakers:
  strict: { window_s: 30, min_requests: 20, error_rate: 0.5, open_for_s: 30, slow_ttft: { over_ms: 1000, rate: 0.5 } }
features:
  chat: { hierarchy: [a, b], breaker: strict }
";

    fn fleet(now: Instant) -> Fleet {
        let mut f = Fleet::new(Duration::from_secs(60), now);
        f.set_config(&load_str(CONFIG, "t").unwrap());
        f
    }

    fn report(endpoint: &str, ok: u64, errors: u64, ttft_us: &[u64]) -> EndpointReport {
        let mut h: Histogram<u64> = histogram::new();
        ttft_us.iter().for_each(|v| h.record(*v).unwrap());
        EndpointReport {
            endpoint: endpoint.into(),
            outcomes: Some(OutcomeCounts { ok, server_error: errors, ..Default::default() }),
            ttft_hdr: histogram::encode(&h).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn the_merged_view_equals_one_process_that_saw_every_request() {
        let now = Instant::now();
        let mut f = fleet(now);
        let mut reference: Histogram<u64> = histogram::new();
        let mut east: Histogram<u64> = histogram::new();
        fastrand::seed(11);
        for sidecar in 0..12 {
            let zone = if sidecar % 3 == 0 { "us-east-1a" } else { "us-west-2b" };
            // Each sidecar sees its own latency profile; the fleet sees all of them.
            let base = 40_000 * (sidecar + 1);
            let ttft: Vec<u64> = (0..400).map(|_| base + fastrand::u64(0..200_000)).collect();
            ttft.iter().for_each(|v| reference.record(*v).unwrap());
            if zone == "us-east-1a" {
                ttft.iter().for_each(|v| east.record(*v).unwrap());
            }
            f.merge(&format!("pod-{sidecar}"), zone, &report("a", 398, 2, &ttft), now).unwrap();
        }
        let v = f.view(now + Duration::from_secs(1));
        let a = &v["endpoints"][0];
        assert_eq!((a["endpoint"].as_str(), a["sidecars_reporting"].as_u64()), (Some("a"), Some(12)));
        assert_eq!((a["outcomes"]["ok"].as_u64(), a["outcomes"]["server_error"].as_u64()), (Some(12 * 398), Some(24)));
        assert!((a["error_rate"].as_f64().unwrap() - 24.0 / 4800.0).abs() < 1e-9);
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        assert_eq!(a["ttft"]["count"].as_u64(), Some(reference.len()));
        for (key, q) in [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)] {
            assert_eq!(a["ttft"][key].as_f64(), Some(ms(&reference, q)), "{key}");
            assert_eq!(a["zones"]["us-east-1a"]["ttft"][key].as_f64(), Some(ms(&east, q)), "east {key}");
        }
        assert_eq!(a["zones"]["us-west-2b"]["ttft"]["count"].as_u64(), Some(8 * 400));
    }

    #[test]
    fn sidecars_too_quiet_to_trip_alone_trip_the_fleet_breaker_together() {
        let t0 = Instant::now();
        let mut f = fleet(t0);
        // Ten sidecars with three requests each: below `min_requests` locally, 30 together.
        for i in 0..10 {
            f.merge(&format!("pod-{i}"), "z", &report("a", 1, 2, &[]), t0).unwrap();
        }
        let opened = f.evaluate(t0 + Duration::from_secs(1));
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!((opened[0].endpoint.as_str(), opened[0].open_for), ("a", Duration::from_secs(30)));
        assert!(opened[0].reason.contains("error rate 67 %") && opened[0].reason.contains("10 sidecars"));
        let d = f.directives(t0 + Duration::from_secs(11));
        assert_eq!((d.len(), d[0].open, d[0].open_for_ms), (1, true, 20_000), "time left is re-sent each tick");

        // The open lapses on its own; a second trip right after doubles it.
        assert!(f.evaluate(t0 + Duration::from_secs(31)).is_empty());
        assert!(f.directives(t0 + Duration::from_secs(31)).is_empty());
        for i in 0..10 {
            f.merge(&format!("pod-{i}"), "z", &report("a", 0, 3, &[]), t0 + Duration::from_secs(32)).unwrap();
        }
        let again = f.evaluate(t0 + Duration::from_secs(33));
        assert_eq!(again[0].open_for, Duration::from_secs(60));

        // The platform team releases it: one `open: false`, then nothing.
        assert!(f.release("a", t0 + Duration::from_secs(40)));
        assert!(!f.release("a", t0 + Duration::from_secs(40)), "not open any more");
        let d = f.directives(t0 + Duration::from_secs(40));
        assert_eq!((d.len(), d[0].open), (1, false));
        assert!(f.directives(t0 + Duration::from_secs(45)).is_empty());
    }

    #[test]
    fn slow_first_tokens_count_from_the_histograms() {
        let t0 = Instant::now();
        let mut f = fleet(t0);
        for i in 0..5 {
            // Four of five first tokens over the policy's 1000 ms.
            f.merge(
                &format!("pod-{i}"),
                "z",
                &report("a", 5, 0, &[300_000, 1_500_000, 2_000_000, 1_200_000, 3_000_000]),
                t0,
            )
            .unwrap();
        }
        let opened = f.evaluate(t0 + Duration::from_secs(1));
        assert!(opened[0].reason.contains("slow first tokens 80 %"), "{opened:?}");
    }

    #[test]
    fn healthy_or_quiet_fleets_stay_closed_and_bad_reports_are_refused() {
        let t0 = Instant::now();
        let mut f = fleet(t0);
        for i in 0..10 {
            f.merge(&format!("pod-{i}"), "z", &report("a", 9, 1, &[]), t0).unwrap();
        }
        f.merge("pod-x", "z", &report("b", 0, 5, &[]), t0).unwrap();
        assert!(f.evaluate(t0 + Duration::from_secs(1)).is_empty(), "10 % errors on a; 5 requests on b");
        assert_eq!(f.merge("pod-1", "z", &report("gone", 1, 0, &[]), t0), Err(Refused::Unknown));
        let mut corrupt = report("a", 1, 0, &[]);
        corrupt.ttft_hdr = b"garbage".to_vec();
        assert_eq!(f.merge("pod-1", "z", &corrupt, t0), Err(Refused::Corrupt));
    }

    #[test]
    fn no_single_sidecar_opens_an_endpoint_for_everyone() {
        let t0 = Instant::now();
        let mut f = fleet(t0);
        // One sidecar claims 1,000 errors while nineteen others saw one success each: without it,
        // nothing is wrong.
        f.merge("liar", "z", &report("a", 0, 1_000, &[]), t0).unwrap();
        for i in 0..19 {
            f.merge(&format!("pod-{i}"), "z", &report("a", 1, 0, &[]), t0).unwrap();
        }
        assert!(f.evaluate(t0 + Duration::from_secs(1)).is_empty(), "one contributor is not the fleet");
        // Others failing too corroborate it: the rule holds without the largest contributor.
        for i in 0..19 {
            f.merge(&format!("pod-{i}"), "z", &report("a", 0, 2, &[]), t0 + Duration::from_secs(2)).unwrap();
        }
        let opened = f.evaluate(t0 + Duration::from_secs(3));
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert!(opened[0].reason.contains("largest contributor left out"), "{}", opened[0].reason);
    }

    #[test]
    fn invented_zones_cannot_grow_the_view_and_idle_zones_are_forgotten() {
        let t0 = Instant::now();
        let mut f = fleet(t0);
        for z in 0..2_000 {
            f.merge(&format!("pod-{z}"), &format!("zone-{z}"), &report("a", 1, 0, &[]), t0).unwrap();
        }
        assert_eq!(f.zone_counts(), (MAX_ZONES, 0), "past the bound, reports share one overflow zone");
        let view = f.view(t0);
        let a = view["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "a").unwrap();
        let zones = a["zones"].as_object().unwrap();
        assert_eq!(zones[OVERFLOW_ZONE]["outcomes"]["ok"].as_u64(), Some(2_000 - (MAX_ZONES as u64 - 1)));
        // Two quiet periods later nothing is left to show: every zone goes.
        f.merge("pod-0", "zone-0", &report("a", 1, 0, &[]), t0 + Duration::from_secs(121)).unwrap();
        assert_eq!(f.zone_counts(), (1, MAX_ZONES));
    }
}
