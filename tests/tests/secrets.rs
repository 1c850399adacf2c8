//! What a pushed snapshot may make a managed sidecar send, and where.
//!
//! The regression: a snapshot could name any environment variable (`auth.env:
//! AWS_SECRET_ACCESS_KEY`) and a URL of its choosing, and the sidecar sent that secret there as a
//! bearer token. A managed sidecar now takes credentials only from what its own flags allow,
//! a variable can be bound to hosts, and no redirect carries a key elsewhere.
//!
//! `PATH` stands in for a secret: every process has it, so no test mutates its environment.

use serde_json::{Value, json};
use spillway_api::config::load_str;
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::snapshot::Snapshot;
use spillway_dataplane::upstream::secrets::SecretPolicy;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar, until};
use std::sync::Arc;

async fn control_plane(yaml: &str) -> (Arc<Discovery>, String) {
    let d = Discovery::new();
    d.publish(Snapshot::build(&load_str(yaml, "pushed.yaml").unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = d.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(served, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (d, url)
}

/// A managed sidecar with `policy`, once it has ACKed the pushed snapshot.
async fn managed(d: &Discovery, url: &str, node: &str, policy: SecretPolicy) -> TestSidecar {
    let (url, id) = (url.to_owned(), node.to_owned());
    let sc = TestSidecar::start_with("unused: true", move |o| {
        o.control_plane = Some(url);
        o.node_id = id;
        o.secrets = policy;
    })
    .await
    .unwrap();
    let version = d.current().unwrap().version.clone();
    until(&mut d.subscribe_nodes(), "the snapshot ACKed", || {
        std::future::ready(d.nodes().get(node).and_then(|n| n.acked_version.clone()) == Some(version.clone()))
    })
    .await;
    sc
}

async fn chat(sc: &TestSidecar) -> (u16, String) {
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let r = TestClient::default().post_json(&sc.url("/v1/chat/completions"), &[], body.to_string()).await.unwrap();
    (r.status.as_u16(), r.header("x-spillway-endpoint").to_owned())
}

fn secret_to(evil: &FakeProvider, safe: &FakeProvider) -> String {
    format!(
        "endpoints:
  evil: {{ provider: openai_compatible, base_url: \"{}\", model: m, auth: {{ kind: bearer_token, env: PATH }} }}
  safe: {{ provider: openai_compatible, base_url: \"{}\", model: m, auth: {{ kind: none }} }}
features:
  chat: {{ hierarchy: [evil, safe] }}
",
        evil.base_url(),
        safe.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_snapshot_cannot_pick_a_secret_the_sidecar_does_not_allow() {
    let evil = FakeProvider::start(FakeConfig::named("evil")).await.unwrap();
    let safe = FakeProvider::start(FakeConfig::named("safe")).await.unwrap();
    let (d, url) = control_plane(&secret_to(&evil, &safe)).await;
    let sc = managed(&d, &url, "shop/p-1", SecretPolicy::restricted("*_API_KEY", vec![])).await;

    // The snapshot is taken (other features must not lose their edits), the endpoint is
    // skipped, and the request is served by the next tier.
    assert_eq!(chat(&sc).await, (200, "safe".to_owned()));
    assert!(evil.recorded().is_empty(), "nothing, let alone the secret, went to the named URL");
    let ready: Value = TestClient::default().get(&sc.url("/readyz")).await.unwrap().json();
    let evil_entry = ready["unavailable_endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "evil");
    let why = evil_entry.and_then(|e| e["reason"].as_str()).unwrap_or_default();
    assert!(why.contains("PATH") && why.contains("*_API_KEY"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_a_host_goes_only_there() {
    let evil = FakeProvider::start(FakeConfig::named("evil")).await.unwrap();
    let safe = FakeProvider::start(FakeConfig::named("safe")).await.unwrap();
    let (d, url) = control_plane(&secret_to(&evil, &safe)).await;

    let elsewhere = managed(&d, &url, "shop/p-1", SecretPolicy::restricted("PATH@api.openai.com", vec![])).await;
    assert_eq!(chat(&elsewhere).await, (200, "safe".to_owned()));
    assert!(evil.recorded().is_empty());
    drop(elsewhere);

    let here = managed(&d, &url, "shop/p-2", SecretPolicy::restricted("PATH@127.0.0.1", vec![])).await;
    assert_eq!(chat(&here).await, (200, "evil".to_owned()), "allowed for this host, it is used");
    let sent = evil.recorded()[0].headers["authorization"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("Bearer {}", std::env::var("PATH").unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_never_carries_the_key_to_another_host() {
    let other = FakeProvider::start(FakeConfig::named("other")).await.unwrap();
    let redirecting = FakeProvider::start(FakeConfig::named("redirecting")).await.unwrap();
    let safe = FakeProvider::start(FakeConfig::named("safe")).await.unwrap();
    let yaml = format!(
        "endpoints:
  r: {{ provider: openai_compatible, base_url: \"{}\", model: m, auth: {{ kind: api_key, env: PATH }}, headers: {{ x-fake-redirect: \"{}/chat/completions\" }} }}
  safe: {{ provider: openai_compatible, base_url: \"{}\", model: m, auth: {{ kind: none }} }}
features:
  chat: {{ hierarchy: [r, safe] }}
",
        redirecting.base_url(),
        other.base_url(),
        safe.base_url()
    );
    let (d, url) = control_plane(&yaml).await;
    let sc = managed(&d, &url, "shop/p-1", SecretPolicy::restricted("PATH", vec![])).await;
    assert_eq!(chat(&sc).await, (200, "safe".to_owned()), "the 307 fails the attempt; the next tier serves");
    assert_eq!(redirecting.recorded().len(), 1);
    assert!(other.recorded().is_empty(), "the redirect was not followed");
}
