//! `spillway-proxy --probe-ready` / `--probe-live`, the exec probes an injected sidecar runs
//! (it binds loopback, which the kubelet's HTTP probes cannot reach).

use spillway_dataplane::{Options, Sidecar};
use std::process::Command;

fn probe(flag: &str, addr: std::net::SocketAddr) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-proxy"))
        .args([flag, "--listen", &addr.to_string()])
        .env_remove("SPILLWAY_LISTEN")
        .output()
        .unwrap();
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_tell_ready_from_live_from_down() {
    // Managed, with an unreachable control plane and no saved snapshot: alive, not ready.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut opts = Options::new(Default::default());
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.control_plane = Some(format!("http://{}", holder.local_addr().unwrap()));
    let waiting = Sidecar::start(opts).await.unwrap();
    let addr = waiting.addr;
    let (live, ready) =
        tokio::task::spawn_blocking(move || (probe("--probe-live", addr), probe("--probe-ready", addr))).await.unwrap();
    assert!(live && !ready, "live {live}, ready {ready}");

    // Standalone with a config: ready.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routing.yaml");
    std::fs::write(
        &config,
        "endpoints:\n  a: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }\nfeatures:\n  chat: { hierarchy: [a] }\n",
    )
    .unwrap();
    let mut opts = Options::new(config);
    opts.listen = "127.0.0.1:0".parse().unwrap();
    let serving = Sidecar::start(opts).await.unwrap();
    let addr = serving.addr;
    assert!(tokio::task::spawn_blocking(move || probe("--probe-ready", addr)).await.unwrap());

    // Nothing listening: neither.
    waiting.shutdown().await;
    assert!(!tokio::task::spawn_blocking(move || probe("--probe-live", addr_of(holder))).await.unwrap());
}

fn addr_of(l: std::net::TcpListener) -> std::net::SocketAddr {
    // A bound socket that never accepts answers nothing within the probe's limit; closing it
    // makes the connection refused, the common case of a crashed sidecar.
    let a = l.local_addr().unwrap();
    drop(l);
    a
}
