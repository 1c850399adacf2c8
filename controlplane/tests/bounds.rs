//! What anonymous or forged reports can make the control plane hold: bounded whatever they
//! send. The regression: 2,000 invented zone names cost +269 MiB and 200,000 invented feedback
//! pairs +640 MiB. Every map sidecars drive is bounded, evicts, and says so in `/metrics`.

use spillway_api::config::load_str;
use spillway_api::v1::{EndpointReport, FeedbackSummary, Node, OutcomeCounts, TelemetryReport};
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::fleet::MAX_ZONES;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy};
use tokio::time::Instant;

const CONFIG: &str = "endpoints:
  a: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
features:
  chat: { hierarchy: [a] }
";

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn invented_zones_and_feedback_pairs_are_bounded_and_counted() {
    let discovery = Discovery::new();
    let state = ConfigState::new(discovery.clone());
    state.set_base(load_str(CONFIG, "t.yaml").unwrap(), "test", "file").unwrap();
    let telemetry = Telemetry::new(state, TelemetryPolicy::default());
    telemetry.set_config(&load_str(CONFIG, "t.yaml").unwrap());
    let now = Instant::now();
    for i in 0..2_000 {
        let r = TelemetryReport {
            node: Some(Node { id: format!("n{i}"), ..Default::default() }),
            interval_ms: 10_000,
            endpoints: vec![EndpointReport {
                endpoint: "a".into(),
                outcomes: Some(OutcomeCounts { ok: 1, ..Default::default() }),
                ..Default::default()
            }],
            feedback: (0..100)
                .map(|j| FeedbackSummary {
                    feature: format!("f{i}-{j}"),
                    endpoint: "a".into(),
                    count: 1,
                    score_sum: 1.0,
                })
                .collect(),
            ..Default::default()
        };
        telemetry.ingest(&format!("n{i}"), &format!("zone-{i}"), &r, now);
    }
    let m = discovery.metrics().encode();
    assert_eq!(metric(&m, "spillway_control_tracked_entries{map=\"zones\"}"), MAX_ZONES as u64);
    assert_eq!(metric(&m, "spillway_control_tracked_entries{map=\"feedback\"}"), 0, "no pair outside the config");
    assert_eq!(metric(&m, "spillway_control_report_parts_refused_total{reason=\"unknown\"}"), 200_000);
    // The figures are not lost: past the bound they are summed under one overflow zone.
    let v = telemetry.view();
    assert_eq!(v["endpoints"][0]["outcomes"]["ok"], 2_000);

    // A routed pair is taken; when the config stops routing it, its trend is evicted.
    let r = TelemetryReport {
        feedback: vec![FeedbackSummary { feature: "chat".into(), endpoint: "a".into(), count: 3, score_sum: 2.0 }],
        ..Default::default()
    };
    telemetry.ingest("n1", "", &r, now);
    assert_eq!(metric(&discovery.metrics().encode(), "spillway_control_tracked_entries{map=\"feedback\"}"), 1);
    let moved = CONFIG.replace("chat:", "search:");
    telemetry.set_config(&load_str(&moved, "t.yaml").unwrap());
    let m = discovery.metrics().encode();
    assert_eq!(metric(&m, "spillway_control_tracked_entries{map=\"feedback\"}"), 0);
    assert_eq!(metric(&m, "spillway_control_evicted_entries_total{map=\"feedback\"}"), 1);
}

#[tokio::test]
async fn node_records_are_bounded_forgetting_the_longest_gone_first() {
    let d = Discovery::with_max_nodes(100);
    d.record("still-here", |n| n.connected = true);
    for i in 0..110 {
        d.record(&format!("n{i}"), |n| n.connected = false);
    }
    let nodes = d.nodes();
    assert_eq!(nodes.len(), 100);
    assert!(nodes.contains_key("still-here"), "a connected node is never evicted");
    assert!(
        !nodes.contains_key("n0") && !nodes.contains_key("n10") && nodes.contains_key("n11"),
        "the oldest went first"
    );
    let m = d.metrics().encode();
    assert_eq!(metric(&m, "spillway_control_evicted_entries_total{map=\"nodes\"}"), 11);
    assert_eq!(metric(&m, "spillway_control_tracked_entries{map=\"nodes\"}"), 100);
}
