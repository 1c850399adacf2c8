//! The telemetry loop end to end: managed sidecars report to a real control plane, which merges
//! the fleet view, opens an endpoint fleet-wide that no sidecar could trip alone, divides a PT
//! pool into leases (a stopped sidecar's share returns), and demotes an endpoint whose user
//! feedback drops — and every answer takes effect in the sidecars' routing.
//!
//! The loop runs on real sockets with short intervals; every wait is for an observable change
//! (a watch channel firing), bounded, never a fixed sleep.

use serde_json::{Value, json};
use spillway_api::config::load_str;
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::feedback::FeedbackPolicy;
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::leases::LeasePolicy;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy, TelemetryService};
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar, until};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const FAST: Duration = Duration::from_millis(40);

struct ControlPlane {
    discovery: Arc<Discovery>,
    state: Arc<ConfigState>,
    telemetry: Arc<Telemetry>,
    url: String,
    _tasks: [tokio::task::JoinHandle<()>; 2],
}

async fn control_plane(yaml: &str, policy: TelemetryPolicy) -> ControlPlane {
    let discovery = Discovery::new();
    let state = ConfigState::new(discovery.clone());
    state.set_base(load_str(yaml, "test.yaml").unwrap(), "test", "file").unwrap();
    let telemetry = Telemetry::new(state.clone(), policy);
    let ticks = telemetry.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (d, t) = (discovery.clone(), telemetry.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(d, Arc::new(Authenticator::SelfDeclared)))
            .add_service(TelemetryService::server(t, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    ControlPlane { discovery, state, telemetry, url, _tasks: [ticks, server] }
}

fn fast_policy() -> TelemetryPolicy {
    TelemetryPolicy { tick: FAST, ..TelemetryPolicy::default() }
}

async fn sidecar(cp: &ControlPlane, node: &str, zone: &str) -> TestSidecar {
    let (url, node, zone) = (cp.url.clone(), node.to_owned(), zone.to_owned());
    TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(url);
        o.node_id = node;
        o.zone = zone;
        o.report_interval = FAST;
    })
    .await
    .unwrap()
}

/// A managed sidecar that has its first snapshot.
async fn ready_sidecar(cp: &ControlPlane, node: &str, zone: &str) -> TestSidecar {
    let sc = sidecar(cp, node, zone).await;
    acked(cp, node).await;
    sc
}

fn applied(sc: &TestSidecar) -> watch::Receiver<u64> {
    sc.sidecar.telemetry_applied.clone().expect("a managed sidecar")
}

async fn debug(sc: &TestSidecar, what: &str) -> Value {
    TestClient::default().get(&sc.url(&format!("/debug/{what}"))).await.unwrap().json()
}

async fn endpoint_state(sc: &TestSidecar, endpoint: &str) -> Value {
    let v = debug(sc, "endpoints").await;
    v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == endpoint).cloned().unwrap()
}

/// Waits until `node` has ACKed the snapshot the control plane serves now.
async fn acked(cp: &ControlPlane, node: &str) {
    let version = cp.discovery.current().unwrap().version.clone();
    let version = &version;
    until(&mut cp.discovery.subscribe_nodes(), "the sidecar to ACK the current snapshot", || async move {
        cp.discovery.nodes().get(node).and_then(|n| n.acked_version.clone()).as_ref() == Some(version)
    })
    .await;
}

/// Sends one chat request for `feature`; returns the endpoint that answered and the request id.
async fn chat(sc: &TestSidecar, feature: &str) -> (String, String) {
    let body = json!({"model": feature, "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    (r.header("x-spillway-endpoint").to_owned(), r.header("x-spillway-request-id").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_too_quiet_to_trip_a_breaker_alone_are_opened_fleet_wide() {
    let flaky = FakeProvider::start(FakeConfig::named("flaky")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        "endpoints:
  flaky: {{ provider: openai_compatible, base_url: \"{}\", model: m, headers: {{ x-fake-status: \"500\" }} }}
  backup: {{ provider: openai_compatible, base_url: \"{}\", model: m }}
breakers:
  b: {{ window_s: 30, min_requests: 6, error_rate: 0.5, open_for_s: 30 }}
features:
  chat: {{ hierarchy: [flaky, backup], breaker: b }}
",
        flaky.base_url(),
        backup.base_url()
    );
    let cp = &control_plane(&yaml, fast_policy()).await;
    let east = &ready_sidecar(cp, "ns/east", "us-east-1a").await;
    let west = &ready_sidecar(cp, "ns/west", "us-west-2b").await;
    let west2 = &ready_sidecar(cp, "ns/west-2", "us-west-2b").await;

    // Three failures each: below `min_requests` for any sidecar; nine for the fleet, and still
    // six without the largest contributor (no single sidecar opens an endpoint for everyone).
    for sc in [east, west, west2] {
        for _ in 0..3 {
            assert_eq!(chat(sc, "chat").await.0, "backup", "each failure falls back");
        }
        assert_eq!(endpoint_state(sc, "flaky").await["state"], "closed", "too few to trip locally");
    }
    let mut fleet = cp.telemetry.subscribe();
    // A request's failure at `flaky` and its answer from `backup` may fall in two reports: wait
    // for both to be merged.
    until(&mut fleet, "the fleet view to open `flaky` and count every answer", || async move {
        let v = cp.telemetry.view();
        let find = |name: &str| v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == name).cloned();
        find("flaky").is_some_and(|e| e["fleet_breaker"]["state"] == "open")
            && find("backup").is_some_and(|b| b["total"]["count"] == 9)
    })
    .await;
    let v = cp.telemetry.view();
    let e = v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "flaky").unwrap().clone();
    assert_eq!(e["outcomes"]["server_error"], 9);
    assert_eq!(e["sidecars_reporting"], 3);
    assert_eq!(e["zones"]["us-east-1a"]["outcomes"]["server_error"], 3);
    assert_eq!(e["zones"]["us-west-2b"]["outcomes"]["server_error"], 6);
    let b = v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "backup").unwrap().clone();
    assert_eq!(b["outcomes"]["ok"], 9);
    assert_eq!(b["total"]["count"], 9, "every sidecar's latency histograms merged: {b}");
    assert!(b["total"]["p50_ms"].as_f64().unwrap() > 0.0);

    // Every sidecar applies the directive: `flaky` is skipped, the reason is the fleet's.
    for sc in [east, west, west2] {
        until(&mut applied(sc), "the sidecar to open `flaky`", || async move {
            endpoint_state(sc, "flaky").await["state"] == "open"
        })
        .await;
        let s = endpoint_state(sc, "flaky").await;
        assert_eq!(s["reason"], "fleet");
        assert!(s["fleet_reason"].as_str().unwrap().contains("fleet error rate 100 %"), "{s}");
    }
    let hits = flaky.hits();
    assert_eq!(chat(east, "chat").await.0, "backup");
    assert_eq!(flaky.hits(), hits, "an open endpoint is not tried");

    // The platform team releases it; the sidecars leave OPEN and start their ramp.
    assert!(cp.telemetry.release("flaky"));
    until(&mut applied(west), "the release to reach the sidecar", || async move {
        endpoint_state(west, "flaky").await["state"] != "open"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_is_leased_among_its_sidecars_and_a_stopped_ones_share_returns() {
    let pt = FakeProvider::start(FakeConfig::named("pt")).await.unwrap();
    let yaml = format!(
        "endpoints:
  pt: {{ provider: openai_compatible, region: us-east-1, base_url: \"{}\", model: m, capacity: {{ pool: p }} }}
pools:
  p: {{ model_units: 1, tokens_per_minute_per_unit: 100000 }}
features:
  chat: {{ hierarchy: [pt] }}
",
        pt.base_url()
    );
    let policy = TelemetryPolicy {
        leases: LeasePolicy {
            reserve: 0.1,
            floor: 0.02,
            ttl: Duration::from_millis(400),
            delivery_margin: Duration::from_millis(100),
        },
        ..fast_policy()
    };
    let cp = control_plane(&yaml, policy).await;
    let a = &sidecar(&cp, "ns/a", "z").await;
    let b = sidecar(&cp, "ns/b", "z").await;
    fn budget(v: Value) -> u64 {
        v["pools"][0]["budget_tpm"].as_u64().unwrap()
    }

    // Neither sidecar has demand: the leasable 90 % is split evenly.
    for sc in [a, &b] {
        until(&mut applied(sc), "an even lease", || async move {
            let v = debug(sc, "pools").await;
            v["pools"][0]["lease"].is_object() && budget(v) == 45_000
        })
        .await;
        assert_eq!(debug(sc, "pools").await["pools"][0]["lease"]["fallback_tpm"], 45_000);
    }

    // `b` stops; once its lease expires, `a` is granted the whole leasable pool.
    b.sidecar.shutdown().await;
    until(&mut applied(a), "the stopped sidecar's share to return", || async move {
        budget(debug(a, "pools").await) == 90_000
    })
    .await;
    let pools = cp.telemetry.view()["pools"].clone();
    assert_eq!((pools[0]["sidecars"].as_u64(), pools[0]["budget_tpm"].as_u64()), (Some(1), Some(100_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_drop_in_feedback_demotes_the_endpoint_until_undone() {
    let good = FakeProvider::start(FakeConfig::named("good")).await.unwrap();
    let backup = FakeProvider::start(FakeConfig::named("backup")).await.unwrap();
    let yaml = format!(
        "endpoints:
  good: {{ provider: openai_compatible, base_url: \"{}\", model: m }}
  backup: {{ provider: openai_compatible, base_url: \"{}\", model: m }}
features:
  summarize: {{ hierarchy: [good, backup] }}
",
        good.base_url(),
        backup.base_url()
    );
    let policy = TelemetryPolicy {
        feedback: FeedbackPolicy {
            window: Duration::from_millis(200),
            min_samples: 5,
            min_drop: 0.3,
            z: 2.0,
            sustained: 2,
            baseline_cap: 1_000.0,
        },
        ..fast_policy()
    };
    let cp = &control_plane(&yaml, policy).await;
    let sc = &ready_sidecar(cp, "ns/a", "z").await;
    let client = &TestClient::default();
    let rate = |id: String, score: f64| async move {
        let body = json!({"request_id": id, "score": score}).to_string();
        let r = client.post_json(&sc.url("/v1/feedback"), &[], body).await.unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
    };
    let trend = move || {
        let v = cp.telemetry.feedback_view();
        v["trends"].as_array().unwrap().iter().find(|t| t["endpoint"] == "good").cloned().unwrap_or(Value::Null)
    };
    // A batch of rated answers per wake-up, until the trend shows what the batches say.
    let mut changes = cp.telemetry.subscribe();
    until(&mut changes, "a baseline of happy users", || async move {
        for _ in 0..6 {
            let (by, id) = chat(sc, "summarize").await;
            assert_eq!(by, "good");
            rate(id, 1.0).await;
        }
        trend()["baseline"].as_f64() == Some(1.0)
    })
    .await;
    until(&mut changes, "users turning unhappy to demote `good`", || async move {
        for _ in 0..6 {
            let (_, id) = chat(sc, "summarize").await;
            rate(id, 0.1).await;
        }
        !cp.state.demotions().is_empty()
    })
    .await;
    let d = cp.state.demotions()[0].clone();
    assert_eq!((d.feature.as_str(), d.endpoint.as_str(), d.active, d.applies), ("summarize", "good", true, true));
    assert!(d.reason.contains("user feedback fell from 1.00 to 0.10"), "{}", d.reason);
    let history = cp.state.history();
    assert_eq!(history.last().unwrap().action, format!("demote good in summarize: {}", d.reason));
    assert_eq!(history.last().unwrap().who, "feedback");

    // The new snapshot reaches the sidecar: `backup` now answers first.
    acked(cp, "ns/a").await;
    assert_eq!(chat(sc, "summarize").await.0, "backup");

    // The platform team undoes it; `good` is primary again.
    cp.telemetry.undo_demotion(d.id, "platform-team").unwrap();
    assert!(!cp.state.demotions()[0].active);
    acked(cp, "ns/a").await;
    assert_eq!(chat(sc, "summarize").await.0, "good");
    let r = client.post_json(&sc.url("/v1/feedback"), &[], r#"{"request_id":"nope","score":0.5}"#).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
}
