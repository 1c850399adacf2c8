//! Per-request overhead of the health layer: planning a three-tier hierarchy whose endpoints all
//! have breakers, then recording the attempt's outcome (window, breaker, HDR histograms).
//! Run: `cargo bench -p spillway-dataplane --bench planner`.

use criterion::{Criterion, criterion_group, criterion_main};
use spillway_dataplane::health::breaker::Observation;
use spillway_dataplane::metrics::Metrics;
use spillway_dataplane::proxy::plan::plan;
use spillway_dataplane::routing::RoutingTable;
use std::hint::black_box;
use std::time::Duration;

const CONFIG: &str = r#"
endpoints:
  a: { provider: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: m }
  b: { provider: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: m }
  c: { provider: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: m }
features:
  chat: { hierarchy: [a, b, c], breaker: interactive }
breakers:
  interactive:
    window_s: 30
    min_requests: 20
    error_rate: 0.2
    slow_ttft: { over_ms: 2000, rate: 0.1 }
    slow_total: { over_ms: 20000, rate: 0.1 }
"#;

fn bench(c: &mut Criterion) {
    let config = spillway_api::config::load_str(CONFIG, "bench.yaml").expect("valid config");
    let table = RoutingTable::build(&config, "v".into(), "bench.yaml", None, &Default::default()).expect("table");
    let feature = table.features["chat"].clone();
    let metrics = Metrics::default();
    let outcome = Observation {
        failed: false,
        throttled: false,
        ttft: Some(Duration::from_millis(350)),
        total: Duration::from_millis(1200),
        max_gap: Some(Duration::from_millis(40)),
        output_tokens: Some(200),
    };
    c.bench_function("plan_and_record", |b| {
        b.iter(|| {
            let p = plan(black_box(&feature), 300, &metrics);
            p[0].target.health.record(
                black_box(&outcome),
                spillway_dataplane::health::interval::Class::Ok,
                false,
                &metrics,
            );
            p.len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
