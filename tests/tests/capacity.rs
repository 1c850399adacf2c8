//! Provisioned throughput with on-demand spillover, on tokio's paused clock: a surge keeps the
//! PT endpoint full and sends the excess on-demand without rejecting anything; a throttling PT
//! endpoint spills every throttled request; batch features never consume PT; and a feature bound
//! to `eu` never reaches a `us` endpoint, outage and surge together.

use serde_json::{Value, json};
use spillway_tests::fake::{FakeConfig, FakeProvider, Script};
use spillway_tests::harness::{Reply, TestClient, TestSidecar};
use std::time::Duration;

async fn fakes() -> (FakeProvider, FakeProvider) {
    (
        FakeProvider::start(FakeConfig::named("pt")).await.unwrap(),
        FakeProvider::start(FakeConfig::named("od")).await.unwrap(),
    )
}

fn config(pt: &FakeProvider, od: &FakeProvider, pt_headers: &str, tpm: u64) -> String {
    format!(
        r#"
endpoints:
  sonnet-pt: {{ provider: openai_compatible, region: us-east-1, base_url: "{}", model: pt, headers: {{ {pt_headers} }}, capacity: {{ pool: sonnet, spill_to: sonnet-od }} }}
  sonnet-od: {{ provider: openai_compatible, region: us-east-1, base_url: "{}", model: od }}
pools:
  sonnet: {{ model_units: 1, tokens_per_minute_per_unit: {tpm}, spill_at_utilisation: 0.95 }}
features:
  search: {{ class: interactive, boundary: [us], hierarchy: [sonnet-pt], breaker: b }}
  recap: {{ class: batch, boundary: [us], hierarchy: [sonnet-pt] }}
breakers:
  b: {{ min_requests: 5, error_rate: 0.5 }}
"#,
        pt.base_url(),
        od.base_url()
    )
}

async fn ask(sc: &TestSidecar, feature: &str) -> Reply {
    let body =
        json!({"model": feature, "max_tokens": 20, "messages": [{"role": "user", "content": "a short question"}]});
    TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap()
}

async fn pool(sc: &TestSidecar) -> Value {
    TestClient::default().get(&sc.url("/debug/pools")).await.unwrap().json()["pools"][0].clone()
}

#[tokio::test(start_paused = true)]
async fn a_surge_fills_the_pool_and_spills_the_rest_without_rejecting_anything() {
    let (pt, od) = fakes().await;
    // 15,000 tokens a minute; each request really uses ~27 (the fake's prompt count + 5 output
    // tokens), so the pool takes ~9 requests a second.
    let sc = TestSidecar::start(&config(&pt, &od, "", 15_000)).await.unwrap();
    let (mut on_pt, mut spilled) = (0, 0);
    // Ten seconds at 4× what the pool can take: 370 requests, one every 27 ms.
    for _ in 0..370 {
        let r = ask(&sc, "search").await;
        assert_eq!(r.status, 200, "nothing is rejected: {}", r.text());
        match r.header("x-spillway-endpoint") {
            "sonnet-pt" => on_pt += 1,
            _ => {
                assert_eq!(r.header("x-spillway-spilled"), "proactive");
                spilled += 1;
            }
        }
        tokio::time::advance(Duration::from_millis(27)).await;
    }
    let p = pool(&sc).await;
    let used = p["tokens_actual"].as_u64().unwrap();
    let budget = 15_000.0 / 6.0;
    assert!(used as f64 >= 0.95 * budget, "the PT endpoint stays ≥ 95 % used over the ten seconds: {p}");
    assert!(used as f64 <= 1.05 * budget, "and is not overrun: {p}");
    assert!(spilled >= 2 * on_pt, "the excess went on-demand: {on_pt} on PT, {spilled} spilled");
    assert_eq!(p["spilled"]["proactive"].as_u64().unwrap(), spilled);
    assert!(p["tokens_charged"].as_u64().unwrap() > 0, "estimates are charged, then corrected: {p}");
    let metrics = TestClient::default().get(&sc.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(&format!(r#"spillway_spillovers_total{{pool="sonnet",reason="proactive"}} {spilled}"#)),
        "{metrics}"
    );
    assert!(metrics.contains(r#"spillway_pool_utilisation{pool="sonnet"}"#));
}

#[tokio::test(start_paused = true)]
async fn a_throttling_pt_endpoint_spills_every_throttled_request() {
    let (pt, od) = fakes().await;
    let sc = TestSidecar::start(&config(&pt, &od, r#"x-fake-status: "429""#, 1_000_000)).await.unwrap();
    for _ in 0..20 {
        let r = ask(&sc, "search").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            (r.header("x-spillway-endpoint"), r.header("x-spillway-spilled"), r.header("x-spillway-attempts")),
            ("sonnet-od", "throttled", "2")
        );
    }
    assert_eq!(pool(&sc).await["spilled"]["throttled"], 20);
    let d = TestClient::default().get(&sc.url("/debug/endpoints")).await.unwrap().json();
    let pt_state =
        d["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "sonnet-pt").unwrap()["state"].clone();
    assert_eq!(pt_state, "closed", "throttling is a capacity signal, not a failure");
}

#[tokio::test(start_paused = true)]
async fn batch_features_start_on_demand_and_never_consume_pt() {
    let (pt, od) = fakes().await;
    let sc = TestSidecar::start(&config(&pt, &od, "", 1_000_000)).await.unwrap();
    for _ in 0..5 {
        let r = ask(&sc, "recap").await;
        assert_eq!(r.header("x-spillway-endpoint"), "sonnet-od");
        assert_eq!(r.header("x-spillway-spilled"), "", "starting on-demand is the plan, not a spill");
    }
    assert_eq!((pt.hits(), od.hits()), (0, 5));
    assert_eq!(pool(&sc).await["tokens_charged"], 0);
}

#[tokio::test(start_paused = true)]
async fn an_eu_feature_never_reaches_a_us_endpoint_under_outage_and_surge() {
    let fake = |name: &str| FakeProvider::start(FakeConfig::named(name));
    let (eu_pt, eu_od, us) = (fake("eu-pt").await.unwrap(), fake("eu-od").await.unwrap(), fake("us").await.unwrap());
    let yaml = format!(
        r#"
endpoints:
  eu-pt: {{ provider: openai_compatible, region: eu-central-1, base_url: "{}", model: m, capacity: {{ pool: eu, spill_to: eu-od }} }}
  eu-od: {{ provider: openai_compatible, region: eu-west-1, base_url: "{}", model: m }}
  us-od: {{ provider: openai_compatible, region: us-east-1, base_url: "{}", model: m }}
pools:
  eu: {{ model_units: 1, tokens_per_minute_per_unit: 500 }}
features:
  gdpr: {{ boundary: [eu], hierarchy: [eu-pt] }}
  global: {{ hierarchy: [us-od] }}
"#,
        eu_pt.base_url(),
        eu_od.base_url(),
        us.base_url()
    );
    let sc = TestSidecar::start(&yaml).await.unwrap();
    // A surge first (the small pool spills to eu-od), then both EU endpoints go down.
    for _ in 0..30 {
        assert_eq!(ask(&sc, "gdpr").await.status, 200);
    }
    eu_pt.set_script(Script { status: Some(503), ..Script::default() });
    eu_od.set_script(Script { status: Some(503), ..Script::default() });
    for _ in 0..30 {
        let r = ask(&sc, "gdpr").await;
        assert_eq!(r.status, 503, "no EU endpoint is left, and no US one may serve: {}", r.text());
    }
    assert_eq!(us.hits(), 0, "not one request crossed the boundary");
    assert!(eu_od.hits() > 0, "the surge did spill, inside the EU");
}

#[tokio::test(start_paused = true)]
async fn streams_on_pt_report_real_usage_even_when_the_client_did_not_ask() {
    let (pt, od) = fakes().await;
    let sc = TestSidecar::start(&config(&pt, &od, "", 1_000_000)).await.unwrap();
    let body =
        json!({"model": "search", "stream": true, "messages": [{"role": "user", "content": "a short question"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains(r#""choices":[]"#), "the usage chunk the client did not ask for is hidden: {text}");
    assert_eq!(pt.recorded()[0].body["stream_options"]["include_usage"], true, "but the PT endpoint was asked for it");
    let p = pool(&sc).await;
    let (charged, actual) = (p["tokens_charged"].as_u64().unwrap(), p["tokens_actual"].as_u64().unwrap());
    assert!(actual > 0 && actual != charged, "settled with the real usage, not the estimate: {p}");

    // A client that asked for usage gets it, untouched.
    let body = json!({"model": "search", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "a short question"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert!(r.text().contains(r#""choices":[]"#));
}
