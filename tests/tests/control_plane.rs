//! The control plane pushes snapshots over `RoutingDiscovery.Stream`; a managed sidecar applies
//! and ACKs them, NACKs one it cannot apply while the old table keeps serving, saves what it
//! accepted, and starts from that file when the control plane is unreachable.

use serde_json::json;
use spillway_api::config::load_str;
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::snapshot::Snapshot;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar, until};
use std::sync::Arc;

fn snapshot(fake: &FakeProvider, feature: &str, extra_endpoint: &str) -> Arc<Snapshot> {
    let yaml = format!(
        "endpoints:\n  up: {{ provider: openai_compatible, base_url: \"{}\", model: m }}\n{extra_endpoint}features:\n  {feature}: {{ hierarchy: [up] }}\n",
        fake.base_url()
    );
    Snapshot::build(&load_str(&yaml, "test.yaml").unwrap()).unwrap()
}

async fn control_plane(d: Arc<Discovery>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(d, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (url, task)
}

async fn managed(url: &str, snapshot_file: &std::path::Path) -> TestSidecar {
    let (url, file) = (url.to_owned(), snapshot_file.to_owned());
    TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(url);
        o.node_id = "ns/pod-1".into();
        o.snapshot_file = Some(file);
    })
    .await
    .unwrap()
}

async fn status(sc: &TestSidecar, feature: &str) -> u16 {
    let body = json!({"model": feature, "messages": [{"role": "user", "content": "hi"}]});
    TestClient::default()
        .post_json(&sc.url("/v1/chat/completions"), &[], body.to_string())
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_pushed_acked_nacked_and_survive_the_control_plane() {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let d = Discovery::new();
    let first = snapshot(&fake, "chat", "");
    d.publish(first.clone());
    let (url, cp) = control_plane(d.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.json");

    // A new sidecar is not ready until its first snapshot arrives, then ACKs it.
    let sc = managed(&url, &file).await;
    let mut nodes = d.subscribe_nodes();
    until(&mut nodes, "the first snapshot's ACK", || {
        std::future::ready(
            d.nodes().get("ns/pod-1").and_then(|n| n.acked_version.clone()) == Some(first.version.clone()),
        )
    })
    .await;
    assert_eq!(status(&sc, "chat").await, 200);
    let ready = TestClient::default().get(&sc.url("/readyz")).await.unwrap();
    assert_eq!(ready.json()["config_version"], first.version.as_str());

    // A change is pushed and applied.
    let second = snapshot(&fake, "search", "");
    d.publish(second.clone());
    until(&mut nodes, "the second snapshot's ACK", || {
        std::future::ready(d.nodes()["ns/pod-1"].acked_version.as_deref() == Some(second.version.as_str()))
    })
    .await;
    assert_eq!(status(&sc, "search").await, 200);
    assert_eq!(status(&sc, "chat").await, 404);

    // An endpoint whose key is missing is no reason to refuse a snapshot: it is ACKed, the
    // endpoint is reported unavailable, and every other feature keeps serving.
    let keyless = snapshot(
        &fake,
        "search",
        "  keyed: { provider: openai, model: m, auth: { kind: api_key, env: SPILLWAY_TEST_UNSET_KEY } }\n",
    );
    d.publish(keyless.clone());
    until(&mut nodes, "the keyless snapshot's ACK", || {
        std::future::ready(d.nodes()["ns/pod-1"].acked_version.as_deref() == Some(keyless.version.as_str()))
    })
    .await;
    assert_eq!(status(&sc, "search").await, 200);
    let ready = TestClient::default().get(&sc.url("/readyz")).await.unwrap();
    assert_eq!(ready.status, 200);
    let unavailable = &ready.json()["unavailable_endpoints"];
    assert_eq!(unavailable[0]["endpoint"], "keyed", "{unavailable}");
    assert!(unavailable[0]["reason"].as_str().unwrap().contains("SPILLWAY_TEST_UNSET_KEY"), "{unavailable}");

    // One the sidecar cannot apply (a setting from a newer control plane) is NACKed with the
    // reason; the previous table keeps serving.
    let mut doc: serde_json::Value = serde_json::from_slice(&keyless.config_json).unwrap();
    doc["future_setting"] = json!(true);
    let json = serde_json::to_vec(&doc).unwrap();
    let bad = Arc::new(Snapshot { version: spillway_api::config::version_of(&json), config_json: json });
    d.publish(bad.clone());
    until(&mut nodes, "the NACK", || std::future::ready(d.nodes()["ns/pod-1"].last_nack.is_some())).await;
    let nack = d.nodes()["ns/pod-1"].last_nack.clone().unwrap();
    assert_eq!(nack.version, bad.version);
    assert!(nack.error.contains("future_setting"), "{}", nack.error);
    assert_eq!(d.nodes()["ns/pod-1"].acked_version.as_deref(), Some(keyless.version.as_str()));
    assert_eq!(status(&sc, "search").await, 200);

    // The control plane goes away: the sidecar keeps serving, and a new sidecar starts from the
    // snapshot the first one saved.
    cp.abort();
    let _ = cp.await;
    drop(d);
    assert_eq!(status(&sc, "search").await, 200);
    let restarted = managed(&url, &file).await;
    assert_eq!(status(&restarted, "search").await, 200, "started from the saved snapshot");
}

#[tokio::test]
async fn a_managed_sidecar_without_a_snapshot_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: the control plane is unreachable.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", holder.local_addr().unwrap());
    let sc = managed(&url, &dir.path().join("none.json")).await;
    let r = TestClient::default().get(&sc.url("/readyz")).await.unwrap();
    assert_eq!(r.status, 503);
    // A request meanwhile is told to come back, in its own API's error format.
    let body = json!({"model": "search", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body).await.unwrap();
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (503, "1"));
    assert_eq!(r.json()["error"]["code"], "not_ready");
    let body = json!({"model": "search", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = TestClient::default().post_json(&sc.url("/v1/messages"), &[], body).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "api_error", "{}", r.text());
}

fn tls_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_sidecars_with_a_certificate_and_only_them() {
    use spillway_dataplane::managed::ClientTls;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let d = Discovery::new();
    let snap = snapshot(&fake, "chat", "");
    d.publish(snap.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(tls_fixture("server.pem"), tls_fixture("server.key")))
        .client_ca_root(Certificate::from_pem(tls_fixture("ca.pem")));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(DiscoveryService::server(d.clone(), Arc::new(Authenticator::SelfDeclared)));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let url = format!("https://localhost:{port}");

    // With its certificate the sidecar gets and ACKs the snapshot.
    let dir = tempfile::tempdir().unwrap();
    let client_tls = ClientTls {
        ca_pem: tls_fixture("ca.pem"),
        identity: Some((tls_fixture("client.pem"), tls_fixture("client.key"))),
    };
    let (u, f) = (url.clone(), dir.path().join("s.json"));
    let sc = TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(u);
        o.node_id = "ns/secure".into();
        o.snapshot_file = Some(f);
        o.control_plane_tls = Some(client_tls);
    })
    .await
    .unwrap();
    let mut nodes = d.subscribe_nodes();
    until(&mut nodes, "the mutual-TLS sidecar's ACK", || {
        std::future::ready(
            d.nodes().get("ns/secure").and_then(|n| n.acked_version.clone()) == Some(snap.version.clone()),
        )
    })
    .await;
    assert_eq!(status(&sc, "chat").await, 200);

    // Without one the TLS handshake is refused: no snapshot, no node.
    let cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(tls_fixture("ca.pem")));
    let refused = async {
        let channel = Channel::from_shared(url.clone()).ok()?.tls_config(cfg).ok()?.connect().await.ok()?;
        let mut client = spillway_api::v1::routing_discovery_client::RoutingDiscoveryClient::new(channel);
        let hello = spillway_api::v1::DiscoveryRequest {
            node: Some(spillway_api::v1::Node { id: "ns/intruder".into(), ..Default::default() }),
            ..Default::default()
        };
        let mut stream = client.stream(tokio_stream::iter(vec![hello])).await.ok()?.into_inner();
        stream.message().await.ok().flatten()
    };
    assert!(refused.await.is_none(), "a client without a certificate got a snapshot");
    assert!(!d.nodes().contains_key("ns/intruder"));
}
