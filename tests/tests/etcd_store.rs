//! The admin API over the etcd store, as an editor meets it: rollback through one replica lands on
//! the other, bad edits are refused before anything is stored, and the history stays bounded.
//! Two `spillway-control` processes on a real single-member etcd.

use http::Method;
use spillway_tests::control::ControlPlane;
use spillway_tests::etcd::EtcdCluster;
use std::time::Duration;
use tokio::time::Instant;

fn routing(features: &[&str]) -> String {
    let mut yaml = String::from("endpoints:\n  a: { provider: openai, model: gpt-4o }\nfeatures:\n");
    for f in features {
        yaml.push_str(&format!("  {f}: {{ hierarchy: [a] }}\n"));
    }
    yaml
}

async fn version(r: &ControlPlane) -> String {
    r.admin(Method::GET, "/v1/config", &[], "").await.json()["version"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `r` serves `want`.
async fn serves(r: &ControlPlane, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while version(r).await != want {
        assert!(Instant::now() < deadline, "{} does not serve {want}", r.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_rollbacks_and_refusals_through_the_etcd_store() {
    let etcd = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("routing.yaml");
    std::fs::write(&seed, routing(&["chat"])).unwrap();
    let args: Vec<String> = ["--etcd-endpoints", &etcd.endpoints()[0], "--config", seed.to_str().unwrap()]
        .iter()
        .chain(&["--insecure-self-declared-identity", "--leader-lease-s", "2"])
        .map(|s| s.to_string())
        .collect();
    let a = ControlPlane::start("control-a", &args).await;
    let b = ControlPlane::start("control-b", &args).await;
    let first = version(&a).await;
    serves(&b, &first).await;

    // Refused before anything is stored: an invalid config (422, with the path at fault), an
    // If-Match that is not a revision (400). Neither appears in the history.
    let bad = a.admin(Method::PUT, "/v1/config", &[], "features:\n  chat: { hierarchy: [nowhere] }\n").await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("nowhere"), "{}", bad.text());
    let garbled = a.admin(Method::PUT, "/v1/config", &[("if-match", "yesterday")], &routing(&["chat"])).await;
    assert_eq!(garbled.status, 400, "{}", garbled.text());
    assert!(garbled.text().contains("If-Match"), "{}", garbled.text());

    let scope = a.admin(Method::GET, "/v1/nodes?scope=everything", &[], "").await;
    assert_eq!(scope.status, 400, "{}", scope.text());
    assert!(scope.json()["error"].as_str().unwrap().contains("replica"), "{}", scope.text());

    // An edit through `a`, a rollback to the seed through `b`: both land on both replicas.
    let put = a.admin(Method::PUT, "/v1/config", &[], &routing(&["chat", "recap"])).await;
    assert!(put.status.is_success(), "{}", put.text());
    let second = put.json()["version"].as_str().unwrap().to_owned();
    serves(&b, &second).await;
    let back = b.admin(Method::POST, &format!("/v1/config/rollback/{first}"), &[], "").await;
    assert!(back.status.is_success(), "{}", back.text());
    serves(&a, &first).await;
    let unknown = b.admin(Method::POST, "/v1/config/rollback/0000000000000000", &[], "").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let h = a.admin(Method::GET, "/v1/history", &[], "").await.json();
    let actions: Vec<&str> = h["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[0], "seed");
    assert_eq!(actions[1], "replace");
    assert!(actions[2].starts_with(&format!("rollback to {first}")), "{actions:?}");
    assert!(h["changes"][2]["diff"].as_str().unwrap().contains("-    \"recap\""), "{}", h["changes"][2]["diff"]);

    // The history keeps the last 200 edits, however many are made.
    for i in 0..205 {
        let r = a.admin(Method::PUT, "/v1/config", &[], &routing(&["chat", &format!("f{i}")])).await;
        assert!(r.status.is_success(), "edit {i}: {}", r.text());
    }
    let h = b.admin(Method::GET, "/v1/history", &[], "").await.json();
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 200);
    assert_eq!(changes.last().unwrap()["seq"], 208, "{}", changes.last().unwrap());
    assert_eq!(changes[0]["seq"], 9);
}
