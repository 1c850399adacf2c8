//! Who may steer the fleet: the control plane verifies every sidecar's projected token with the
//! Kubernetes API (a fake one here, answering TokenReview as the real one does) before it reads
//! a single message, files its figures under the identity the API server vouches for, and lets
//! no stream speak for another node.
//!
//! The regression this guards: an anonymous client on the gRPC port opened an endpoint
//! fleet-wide with 1,000 fake errors and cut a real sidecar's PT lease with fake demand.

use serde_json::json;
use spillway_api::config::load_str;
use spillway_api::v1::telemetry_client::TelemetryClient;
use spillway_api::v1::{EndpointReport, Node, OutcomeCounts, PoolReport, TelemetryReport, TelemetryResponse};
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::identity::{Authenticator, TokenReviewer};
use spillway_controlplane::leases::LeasePolicy;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy, TelemetryService};
use spillway_tests::fake::kube::FakeKube;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar, until};
use std::sync::Arc;
use std::time::Duration;

struct ControlPlane {
    discovery: Arc<Discovery>,
    telemetry: Arc<Telemetry>,
    url: String,
    _tasks: [tokio::task::JoinHandle<()>; 2],
}

async fn control_plane(yaml: &str, kube: &FakeKube) -> ControlPlane {
    let discovery = Discovery::new();
    let state = ConfigState::new(discovery.clone());
    state.set_base(load_str(yaml, "test.yaml").unwrap(), "test", "file").unwrap();
    // Short leases: a new control plane grants only what sidecars already hold for one lease
    // TTL (it cannot know what an earlier one granted), and these tests wait for grants.
    let leases = LeasePolicy {
        ttl: Duration::from_millis(300),
        delivery_margin: Duration::from_millis(50),
        ..LeasePolicy::default()
    };
    let policy = TelemetryPolicy { tick: Duration::from_millis(40), leases, ..TelemetryPolicy::default() };
    let telemetry = Telemetry::new(state, policy);
    let ticks = telemetry.start();
    let reviewer = TokenReviewer::new(kube.client(), discovery.metrics().clone(), vec!["shop".into()]);
    let auth = Arc::new(Authenticator::TokenReview(Box::new(reviewer)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (d, t) = (discovery.clone(), telemetry.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(d, auth.clone()))
            .add_service(TelemetryService::server(t, auth))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    ControlPlane { discovery, telemetry, url, _tasks: [ticks, server] }
}

/// One report stream from a raw gRPC client: its first answer, or the status that ended it.
async fn report(
    cp: &ControlPlane,
    token: Option<&str>,
    r: TelemetryReport,
) -> Result<Option<TelemetryResponse>, tonic::Status> {
    let mut client = TelemetryClient::connect(cp.url.clone()).await.unwrap();
    // Reported again every 100 ms, as a sidecar would (at its report interval), until the
    // stream ends: a grant goes only to a sidecar that keeps reporting.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while tx.send(r.clone()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut answers = client.report(req).await?.into_inner();
    tokio::time::timeout(Duration::from_secs(20), answers.message()).await.expect("an answer or an end")
}

fn errors(node: &str, endpoint: &str, n: u64) -> TelemetryReport {
    TelemetryReport {
        node: Some(Node { id: node.into(), zone: "forged-zone".into(), ..Default::default() }),
        interval_ms: 10_000,
        endpoints: vec![EndpointReport {
            endpoint: endpoint.into(),
            outcomes: Some(OutcomeCounts { server_error: n, ..Default::default() }),
            ..Default::default()
        }],
        pools: vec![PoolReport { pool: "pt".into(), tokens_used: 0, tokens_demanded: u64::MAX / 2, held: None }],
        ..Default::default()
    }
}

/// A PT endpoint with its on-demand twin, a pool (so every tick answers with leases) and a
/// breaker the fleet view judges.
fn config(base_url: &str) -> String {
    format!(
        "endpoints:
  up: {{ provider: openai_compatible, base_url: \"{base_url}\", model: m, capacity: {{ pool: pt, spill_to: od }} }}
  od: {{ provider: openai_compatible, base_url: \"{base_url}\", model: m }}
pools:
  pt: {{ model_units: 1, tokens_per_minute_per_unit: 60000 }}
breakers:
  b: {{ window_s: 30, min_requests: 6, error_rate: 0.5, open_for_s: 30 }}
features:
  chat: {{ hierarchy: [up], breaker: b }}
"
    )
}

fn fleet_endpoint(cp: &ControlPlane, endpoint: &str) -> Option<serde_json::Value> {
    let v = cp.telemetry.view();
    v["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == endpoint).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_sidecars_report_and_only_for_themselves() {
    let kube = FakeKube::start().await;
    kube.set_zone("ip-10-0-1-7", "us-east-1a");
    let up = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let cp = &control_plane(&config(&up.base_url()), &kube).await;

    // A real sidecar with its projected token: verified as shop/checkout-1, filed under its
    // node's zone whatever it declares.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, kube.mint("shop", "checkout-1", "ip-10-0-1-7", "spillway")).unwrap();
    let (url, tf) = (cp.url.clone(), token_file.clone());
    let sc = TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(url);
        o.node_id = "shop/checkout-1".into();
        o.zone = "declared-zone".into();
        o.control_plane_token_file = Some(tf);
        o.report_interval = Duration::from_millis(40);
    })
    .await
    .unwrap();
    let version = cp.discovery.current().unwrap().version.clone();
    until(&mut cp.discovery.subscribe_nodes(), "the verified sidecar's ACK", || {
        std::future::ready(
            cp.discovery.nodes().get("shop/checkout-1").and_then(|n| n.acked_version.clone()) == Some(version.clone()),
        )
    })
    .await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    until(&mut cp.telemetry.subscribe(), "the sidecar's figures under its node's zone", || {
        std::future::ready(fleet_endpoint(cp, "up").is_some_and(|e| e["zones"]["us-east-1a"]["outcomes"]["ok"] == 1))
    })
    .await;
    let e = fleet_endpoint(cp, "up").unwrap();
    assert!(e["zones"].get("declared-zone").is_none(), "{e}");
    let lease_before = cp.telemetry.view()["pools"][0].clone();
    assert_eq!(lease_before["sidecars"], 1, "{lease_before}");

    // Anonymous: refused before a message is read.
    let anon = report(cp, None, errors("shop/checkout-1", "up", 1_000)).await.unwrap_err();
    assert_eq!(anon.code(), tonic::Code::Unauthenticated, "{anon:?}");
    // A token the API server minted for itself, not for spillway.
    let wrong_audience = kube.mint("shop", "evil-1", "ip-10-0-1-7", "https://kubernetes.default.svc");
    let e = report(cp, Some(&wrong_audience), errors("shop/evil-1", "up", 1_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("audiences"), "the API server's reason is passed on: {e:?}");
    // A garbage token.
    let e = report(cp, Some("not-a-token"), errors("shop/evil-1", "up", 1_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A real pod's token, speaking for another node.
    let evil = kube.mint("shop", "evil-1", "ip-10-0-1-7", "spillway");
    let e = report(cp, Some(&evil), errors("shop/checkout-1", "up", 1_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // A pod of a namespace not allowed to connect.
    let other = kube.mint("payments", "p-1", "ip-10-0-1-7", "spillway");
    let e = report(cp, Some(&other), errors("payments/p-1", "up", 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // Nothing any of them said was merged: no fleet-wide open, the lease book unchanged.
    cp.telemetry.tick(tokio::time::Instant::now());
    let e = fleet_endpoint(cp, "up").unwrap();
    assert_eq!(e["fleet_breaker"]["state"], "closed", "{e}");
    assert_eq!(e["outcomes"]["server_error"], 0, "{e}");
    assert_eq!(cp.telemetry.view()["pools"][0]["sidecars"], 1);
    assert!(!cp.discovery.nodes().contains_key("shop/evil-1"));
    let metrics = cp.discovery.metrics().encode();
    assert!(metrics.contains("spillway_control_stream_auth_failures_total{reason=\"denied\"} 4"), "{metrics}");

    // A verified pod reporting for itself is heard, but a report heavier than any sidecar could
    // send (1,000,000 errors in 10 s) is refused and counted, not merged.
    let e = report(cp, Some(&evil), errors("shop/evil-1", "up", 1_000_000)).await;
    assert!(e.is_ok(), "{e:?}");
    until(&mut cp.telemetry.subscribe(), "the forged weight to be refused", || {
        let m = cp.discovery.metrics().encode();
        let refused = m.lines().find_map(|l| {
            l.strip_prefix("spillway_control_report_parts_refused_total{reason=\"out_of_bounds\"} ")?
                .parse::<u64>()
                .ok()
        });
        std::future::ready(refused.is_some_and(|n| n >= 1))
    })
    .await;
    let e = fleet_endpoint(cp, "up").unwrap();
    assert_eq!(e["outcomes"]["server_error"], 0, "{e}");
    // Its demand counts once, capped at the pool: the real sidecar keeps a share.
    let pools = cp.telemetry.view()["pools"][0].clone();
    assert_eq!(pools["sidecars"], 2, "{pools}");
    assert!(pools["demand_tpm"].as_u64().unwrap() <= 2 * 60_000, "{pools}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_are_cached_per_token_and_a_revoked_token_opens_nothing() {
    let kube = FakeKube::start().await;
    let cp = &control_plane(&config("http://127.0.0.1:9/v1"), &kube).await;
    let token = kube.mint("shop", "p-1", "n", "spillway");
    let hello = |pod: &str| TelemetryReport {
        node: Some(Node { id: format!("shop/{pod}"), ..Default::default() }),
        pools: vec![PoolReport { pool: "pt".into(), tokens_used: 0, tokens_demanded: 10, held: None }],
        ..Default::default()
    };
    // Two streams with one token (a sidecar's discovery and telemetry): one TokenReview.
    for _ in 0..2 {
        let answer = report(cp, Some(&token), hello("p-1")).await.unwrap().unwrap();
        assert_eq!(answer.leases[0].pool, "pt", "a verified sidecar is leased its share");
    }
    assert_eq!(kube.reviews(), 1);
    // A token for a deleted pod is refused with the API server's reason.
    let stale = kube.mint("shop", "gone-1", "n", "spillway");
    kube.revoke(&stale);
    let e = report(cp, Some(&stale), hello("gone-1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("invalidated"), "{e:?}");
}

/// The chart's default, end to end: the injector's patch gives the sidecar the control plane's
/// CA and a projected token; the control plane serves gRPC over TLS with the injector's own
/// certificate and verifies the token. Nothing in between is configured by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_sidecar_reaches_a_tls_control_plane_with_its_token() {
    use spillway_controlplane::inject::{InjectOptions, plan};
    let kube = FakeKube::start().await;
    let up = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    // The injector's certificate (self-signed mode makes one like it), serving gRPC too.
    let cert = spillway_controlplane::webhook::generate(&["localhost".into()]).unwrap();
    let discovery = Discovery::new();
    let state = ConfigState::new(discovery.clone());
    state.set_base(load_str(&config(&up.base_url()), "t.yaml").unwrap(), "test", "file").unwrap();
    let reviewer = TokenReviewer::new(kube.client(), discovery.metrics().clone(), vec![]);
    let auth = Arc::new(Authenticator::TokenReview(Box::new(reviewer)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let tls = spillway_controlplane::tls::from_pem(&cert.cert_pem, &cert.key_pem);
    let d = discovery.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(DiscoveryService::server(d, auth))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // What the injector puts into a pod's sidecar.
    let opts = InjectOptions {
        control_plane: url.clone(),
        control_plane_ca_pem: Some(cert.ca_pem.clone()),
        ..Default::default()
    };
    let pod = json!({"metadata": {"name": "checkout-1", "namespace": "shop"}, "spec": {"containers": [{"name": "app", "image": "app"}]}});
    let (ops, warnings) = plan(&opts, &pod);
    assert!(warnings.is_empty(), "{warnings:?}");
    let sidecar = ops.iter().find(|o| o["path"] == "/spec/initContainers").unwrap()["value"][0].clone();
    let env = |name: &str| {
        sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    let ca_pem = env("SPILLWAY_CONTROL_PLANE_CA_PEM").expect("the CA is injected");
    assert_eq!(env("SPILLWAY_CONTROL_PLANE").as_deref(), Some(url.as_str()));
    assert!(env("SPILLWAY_CONTROL_PLANE_TOKEN_FILE").is_some(), "the token is projected");
    // The kubelet writes the projected token; here, a temp file stands in for the mount.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, kube.mint("shop", "checkout-1", "ip-10-0-1-7", "spillway")).unwrap();
    let sc = TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(url);
        o.node_id = "shop/checkout-1".into();
        o.control_plane_tls = Some(spillway_dataplane::managed::ClientTls::with_ca(ca_pem.into_bytes(), None).unwrap());
        o.control_plane_token_file = Some(token_file);
    })
    .await
    .unwrap();
    let version = discovery.current().unwrap().version.clone();
    until(&mut discovery.subscribe_nodes(), "the injected sidecar's ACK over TLS", || {
        std::future::ready(
            discovery.nodes().get("shop/checkout-1").and_then(|n| n.acked_version.clone()) == Some(version.clone()),
        )
    })
    .await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
