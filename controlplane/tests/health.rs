//! The kubelet's probes: `/healthz` always, `/readyz` only once a valid config is published.

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spillway_api::config::load_str;
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::health;
use spillway_controlplane::snapshot::Snapshot;

#[tokio::test]
async fn ready_only_with_a_published_snapshot() {
    let d = Discovery::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router_d = d.clone();
    tokio::spawn(spillway_controlplane::listen::serve(
        listener,
        health::router(router_d),
        spillway_controlplane::listen::Timeouts::API,
    ));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let get = |path: &str| {
        let uri = format!("{base}{path}").parse().unwrap();
        let client = client.clone();
        async move {
            let r = client.get(uri).await.unwrap();
            let status = r.status().as_u16();
            (status, String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    let (status, body) = get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: no valid routing config yet\n"));
    let yaml = "endpoints:\n  e: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }\nfeatures:\n  f: { hierarchy: [e] }\n";
    let s = Snapshot::build(&load_str(yaml, "t").unwrap()).unwrap();
    d.publish(s.clone());
    let (status, body) = get("/readyz").await;
    assert_eq!((status, body), (200, format!("ready: serving version {}\n", s.version)));
}
