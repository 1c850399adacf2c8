//! The discovery protocol from a raw gRPC client: initial push, stale nonces ignored, ACK and
//! NACK recorded per node, pushes on change, and a reconnect that resumes from its version.

use spillway_api::config::load_str;
use spillway_api::v1::routing_discovery_client::RoutingDiscoveryClient;
use spillway_api::v1::{DiscoveryRequest, DiscoveryResponse, ErrorDetail, Node};
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::snapshot::Snapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

fn snapshot(feature: &str) -> Arc<Snapshot> {
    let yaml = format!(
        "endpoints:\n  e: {{ provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }}\nfeatures:\n  {feature}: {{ hierarchy: [e] }}\n"
    );
    Snapshot::build(&load_str(&yaml, "t.yaml").unwrap()).unwrap()
}

async fn serve(d: Arc<Discovery>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(d, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

async fn open(url: &str, version: &str) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
    let mut client = RoutingDiscoveryClient::connect(url.to_owned()).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let node = Node { id: "n1".into(), ..Default::default() };
    tx.send(DiscoveryRequest { node: Some(node), version_info: version.into(), ..Default::default() }).await.unwrap();
    let responses = client.stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, responses)
}

async fn next(s: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(20), s.message()).await.expect("a response").unwrap().unwrap()
}

/// Waits (bounded) until the control plane's view of node `n1` satisfies `check`.
async fn node_until(d: &Discovery, check: impl Fn(&spillway_controlplane::ads::NodeStatus) -> bool) {
    let mut rx = d.subscribe_nodes();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !d.nodes().get("n1").is_some_and(&check) {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("node status did not change as expected");
}

#[tokio::test]
async fn ack_nack_stale_nonces_and_resume() {
    let d = Discovery::new();
    let v1 = snapshot("a");
    d.publish(v1.clone());
    let url = serve(d.clone()).await;

    let (tx, mut rx) = open(&url, "").await;
    let r1 = next(&mut rx).await;
    assert_eq!(r1.version_info, v1.version);
    assert_eq!(r1.snapshot.as_ref().unwrap().config_json, v1.config_json);

    // A stale nonce is ignored; the right one is an ACK.
    tx.send(DiscoveryRequest {
        version_info: v1.version.clone(),
        response_nonce: "stale".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DiscoveryRequest {
        version_info: v1.version.clone(),
        response_nonce: r1.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    node_until(&d, |n| n.acked_version.as_deref() == Some(v1.version.as_str())).await;
    assert_eq!((d.rollout(&v1.version).acked, d.rollout(&v1.version).nacked), (1, 0));

    // A change is pushed with a new nonce; a NACK keeps the old version and records why.
    let v2 = snapshot("b");
    d.publish(v2.clone());
    let r2 = next(&mut rx).await;
    assert_eq!(r2.version_info, v2.version);
    assert_ne!(r2.nonce, r1.nonce);
    let err = ErrorDetail { code: 3, message: "cannot apply".into() };
    tx.send(DiscoveryRequest {
        version_info: v1.version.clone(),
        response_nonce: r2.nonce,
        error_detail: Some(err),
        ..Default::default()
    })
    .await
    .unwrap();
    node_until(&d, |n| n.last_nack.is_some()).await;
    let n = d.nodes()["n1"].clone();
    assert_eq!(n.last_nack.unwrap().version, v2.version);
    assert_eq!(n.acked_version.as_deref(), Some(v1.version.as_str()));
    // Published is not in force: the admin API's /v1/config says the one sidecar refused it.
    let r = d.rollout(&v2.version);
    assert_eq!((r.acked, r.nacked, r.other_version), (0, 1, 0));

    // Publishing the same content again is not a change.
    d.publish(snapshot("b"));
    // A sidecar reconnecting with the current version is not sent it again: the first thing it
    // receives is the next change.
    drop((tx, rx));
    let (_tx, mut rx) = open(&url, &v2.version).await;
    let v3 = snapshot("c");
    d.publish(v3.clone());
    assert_eq!(next(&mut rx).await.version_info, v3.version);
}

#[test]
fn snapshots_are_content_versioned() {
    assert_eq!(snapshot("a").version, snapshot("a").version);
    assert_ne!(snapshot("a").version, snapshot("b").version);
}
