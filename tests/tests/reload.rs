//! The config file is watched: a valid change swaps the routing table atomically, an invalid one
//! is rejected and the old table keeps serving. Covers the two ways files really get replaced:
//! an editor's rename over the original, and a Kubernetes ConfigMap's `..data` symlink swap.

use serde_json::json;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar};
use std::path::Path;
use std::time::Duration;

fn yaml(fake: &FakeProvider, feature: &str) -> String {
    format!(
        "endpoints:\n  up: {{ provider: openai_compatible, base_url: \"{}\", model: m }}\nfeatures:\n  {feature}: {{ hierarchy: [up] }}\n",
        fake.base_url()
    )
}

/// Waits for the next reload (applied or rejected). The bound only turns a missing file event
/// into a failure instead of a hang; nothing waits for a fixed time.
async fn next_reload(rx: &mut tokio::sync::watch::Receiver<spillway_dataplane::routing::ReloadStatus>) {
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .expect("no reload within 30 s of the file change")
        .unwrap();
}

async fn status_of(sc: &TestSidecar, feature: &str) -> u16 {
    let body = json!({"model": feature, "messages": [{"role": "user", "content": "hi"}]});
    TestClient::default()
        .post_json(&sc.url("/v1/chat/completions"), &[], body.to_string())
        .await
        .unwrap()
        .status
        .as_u16()
}

fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn editor_style_rename_swaps_the_table_and_a_bad_edit_keeps_it() {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let sc = TestSidecar::start_with(&yaml(&fake, "old"), |o| o.watch = true).await.unwrap();
    let mut rx = sc.sidecar.routing.subscribe();
    assert_eq!(status_of(&sc, "old").await, 200);

    replace_by_rename(&sc.config_path, &yaml(&fake, "new"));
    next_reload(&mut rx).await;
    assert_eq!(rx.borrow().applied, 1);
    assert_eq!(status_of(&sc, "new").await, 200);
    assert_eq!(status_of(&sc, "old").await, 404);

    // A broken edit: rejected, reported, and the last good table keeps serving.
    replace_by_rename(&sc.config_path, "features:\n  new: { hierarchy: [missing] }\n");
    next_reload(&mut rx).await;
    let status = rx.borrow().clone();
    assert_eq!((status.applied, status.rejected), (1, 1));
    let err = status.last_error.unwrap();
    assert!(err.contains("features.new.hierarchy[0]: unknown endpoint `missing`"), "{err}");
    assert_eq!(status_of(&sc, "new").await, 200);
    let ready = TestClient::default().get(&sc.url("/readyz")).await.unwrap().json();
    assert!(ready["last_reload_error"].as_str().unwrap().contains("missing"), "{ready}");
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    // The kubelet's layout: routing.yaml -> ..data/routing.yaml, ..data -> ..<timestamp>/
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_11_22_a")).unwrap();
    std::fs::write(d.join("..2026_11_22_a/routing.yaml"), yaml(&fake, "before")).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_a", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routing.yaml", d.join("routing.yaml")).unwrap();

    let config = d.join("routing.yaml");
    let sc = TestSidecar::start_with("unused: true", |o| {
        o.watch = true;
        o.config = config.clone();
    })
    .await
    .unwrap();
    let mut rx = sc.sidecar.routing.subscribe();
    assert_eq!(status_of(&sc, "before").await, 200);

    std::fs::create_dir(d.join("..2026_11_22_b")).unwrap();
    std::fs::write(d.join("..2026_11_22_b/routing.yaml"), yaml(&fake, "after")).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_22_a")).unwrap();

    next_reload(&mut rx).await;
    assert_eq!(status_of(&sc, "after").await, 200);
    assert_eq!(status_of(&sc, "before").await, 404);
}

#[tokio::test]
async fn an_invalid_config_never_starts_a_sidecar() {
    let err = TestSidecar::start("endpoints: {}\nfeatures:\n  f: { hierarchy: [nope] }\n").await.err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("routing.yaml: features.f.hierarchy[0]: unknown endpoint `nope`"), "{msg}");
}

#[tokio::test]
async fn the_sidecar_refuses_non_loopback_addresses() {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let err =
        TestSidecar::start_with(&yaml(&fake, "f"), |o| o.listen = "0.0.0.0:0".parse().unwrap()).await.err().unwrap();
    assert!(format!("{err}").contains("loopback"), "{err}");
}

/// Reading the config is not changing it. The watcher once reacted to its own reads (inotify's
/// open and close events): one `cat` of an invalid file started a reload loop that rejected the
/// same file twenty times a second, for ever.
#[tokio::test]
async fn reading_the_config_reloads_nothing() {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let sc = TestSidecar::start_with(&yaml(&fake, "old"), |o| o.watch = true).await.unwrap();
    let mut rx = sc.sidecar.routing.subscribe();
    replace_by_rename(&sc.config_path, "features:\n  broken: { hierarchy: [missing] }\n");
    next_reload(&mut rx).await;
    assert_eq!(rx.borrow_and_update().rejected, 1);
    for _ in 0..5 {
        std::fs::read(&sc.config_path).unwrap();
    }
    // A negative check, so it needs a span of time: with the loop, a re-read of the broken file
    // came every 50 ms; a second shows none comes.
    let spurious = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
    assert!(spurious.is_err(), "a read reloaded the config: {:?}", rx.borrow().clone());
    replace_by_rename(&sc.config_path, &yaml(&fake, "new"));
    next_reload(&mut rx).await;
    let status = rx.borrow().clone();
    assert_eq!((status.applied, status.rejected), (1, 1), "{status:?}");
}
