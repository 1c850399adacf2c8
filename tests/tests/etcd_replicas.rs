//! Three control-plane processes on a real 3-member etcd cluster (Debian's etcd-server), six real
//! managed sidecars reaching them through one round-robin address (as through a Service).
//!
//! What a platform team would notice if it broke: the sidecars' PT grants exceed the pool; an
//! edit made through one replica does not reach another replica's sidecars, is lost when the
//! replicas restart, or silently overwrites a concurrent edit; the replicas' histories differ;
//! losing one etcd member disturbs anything; a dead leader is not replaced within its lease.
//!
//! Real time with short leases (leader 4 s, grants 3 s); every wait is for an observable change,
//! bounded.

use http::Method;
use serde_json::Value;
use spillway_tests::control::ControlPlane;
use spillway_tests::etcd::EtcdCluster;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestClient, TestSidecar, balancer, managed_sidecars, sample_until};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const POOL: u64 = 120_000;
// Long enough that a leader rides out an etcd member dying (a raft election and a reconnect) on a
// busy 2-core machine; short enough to keep the test quick.
const LEADER_LEASE: Duration = Duration::from_secs(4);

/// `flaky` always fails; its breaker needs 10 requests, so no sidecar (2 failures each) nor any
/// one replica's share of them (2 sidecars, 4 failures) can open it: only all six together.
fn routing(base_url: &str, extra_feature: &str) -> String {
    format!(
        "endpoints:
  pt: {{ provider: openai_compatible, base_url: \"{base_url}\", model: m, capacity: {{ pool: p, spill_to: od }} }}
  od: {{ provider: openai_compatible, base_url: \"{base_url}\", model: m }}
  flaky: {{ provider: openai_compatible, base_url: \"{base_url}\", model: m, headers: {{ x-fake-status: \"500\" }} }}
pools:
  p: {{ model_units: 1, tokens_per_minute_per_unit: {POOL} }}
breakers:
  b: {{ window_s: 60, min_requests: 10, error_rate: 0.5, open_for_s: 60 }}
features:
  chat: {{ hierarchy: [pt] }}
  probe: {{ hierarchy: [flaky, od], breaker: b }}
{extra_feature}"
    )
}

/// The leader's fleet view of `endpoint`, asked through `via` (a follower forwards it).
async fn fleet_view(via: &ControlPlane, endpoint: &str) -> Value {
    let v = via.admin(Method::GET, "/v1/fleet", &[], "").await;
    assert!(v.status.is_success(), "{}", v.text());
    v.json()["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["endpoint"] == endpoint)
        .cloned()
        .unwrap_or_default()
}

struct Fleet {
    etcd: EtcdCluster,
    args: Vec<String>,
    replicas: Vec<ControlPlane>,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    next_name: usize,
}

impl Fleet {
    async fn start_replica(&mut self) -> ControlPlane {
        self.next_name += 1;
        let r = ControlPlane::start(&format!("control-{}", self.next_name), &self.args).await;
        self.backends.lock().unwrap().push(r.grpc);
        r
    }

    async fn leaders(&self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(e) = r.leading().await {
                out.push((i, e));
            }
        }
        out
    }

    /// Waits until exactly one replica leads; returns it and its epoch.
    async fn one_leader(&self, within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            let l = self.leaders().await;
            assert!(l.len() <= 1, "two replicas lead at once: {l:?}");
            if let [one] = l[..] {
                return one;
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill_replica(&mut self, i: usize) {
        let r = self.replicas.remove(i);
        self.backends.lock().unwrap().retain(|a| *a != r.grpc);
        r.kill().await;
    }
}

async fn version_of(sidecar: &TestSidecar) -> String {
    let r = TestClient::default().get(&sidecar.url("/readyz")).await.unwrap();
    r.json()["config_version"].as_str().unwrap_or_default().to_owned()
}

/// Waits until every sidecar serves `version`.
async fn every_sidecar_serves(sidecars: &[TestSidecar], version: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for s in sidecars {
            seen.push(version_of(s).await);
        }
        if seen.iter().all(|v| v == version) {
            return;
        }
        assert!(Instant::now() < deadline, "sidecars serve {seen:?}, not {version}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn history(r: &ControlPlane) -> Value {
    let h = r.admin(Method::GET, "/v1/history", &[], "").await;
    assert!(h.status.is_success(), "{}", h.text());
    h.json()["changes"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_etcd_grant_within_the_pool_share_every_edit_and_survive_losing_a_member_and_the_leader() {
    let etcd = EtcdCluster::start(3).await;
    let fake = FakeProvider::start(FakeConfig::named("pt")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("routing.yaml");
    std::fs::write(&seed, routing(&fake.base_url(), "")).unwrap();
    let args: Vec<String> = [
        "--etcd-endpoints",
        &etcd.endpoints().join(","),
        "--etcd-prefix",
        "/spillway-test",
        "--config",
        seed.to_str().unwrap(),
        "--insecure-self-declared-identity",
        "--tick-s",
        "1",
        "--leader-lease-s",
        &LEADER_LEASE.as_secs().to_string(),
        "--grant-ttl-s",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let backends = Arc::new(Mutex::new(Vec::new()));
    let mut fleet = Fleet { etcd, args, replicas: Vec::new(), backends: backends.clone(), next_name: 0 };
    for _ in 0..3 {
        let r = fleet.start_replica().await;
        fleet.replicas.push(r);
    }
    let url = format!("http://{}", balancer(backends).await);
    let sidecars = managed_sidecars(&url, 6).await;
    sample_until(&sidecars, POOL, "every sidecar leased", |h| h.iter().all(|t| *t > 0)).await;
    let (leader, epoch) = fleet.one_leader(Duration::from_secs(10)).await;

    // An edit through a follower, based on the revision it showed, reaches every replica's
    // sidecars; the same edit based on that now-stale revision is refused, naming the writer.
    let follower = &fleet.replicas[(leader + 1) % 3];
    let current = follower.admin(Method::GET, "/v1/config", &[], "").await;
    let etag = current.header("etag").to_owned();
    assert!(!etag.is_empty(), "GET /v1/config gives the revision to edit against");
    let edited = routing(&fake.base_url(), "  recap: { hierarchy: [od] }\n");
    let headers = [("if-match", etag.as_str()), ("x-spillway-reason", "add recap")];
    let put = follower.admin(Method::PUT, "/v1/config", &headers, &edited).await;
    assert!(put.status.is_success(), "{}", put.text());
    let version = put.json()["version"].as_str().unwrap().to_owned();
    every_sidecar_serves(&sidecars, &version).await;
    // Each replica serves some of the sidecars; any replica's views count all of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = follower.admin(Method::GET, "/v1/config", &[], "").await.json();
        if c["sidecars"]["acked"] == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout does not count every replica's sidecars: {}", c["sidecars"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nodes = fleet.replicas[leader].admin(Method::GET, "/v1/nodes", &[], "").await.json();
    let ids: std::collections::BTreeSet<&str> =
        nodes["nodes"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(ids.len(), 6, "{nodes}");
    assert_eq!(nodes["replicas"].as_array().unwrap().len(), 3, "{nodes}");
    let mine = fleet.replicas[leader].admin(Method::GET, "/v1/nodes?scope=replica", &[], "").await.json();
    assert!(mine["nodes"].as_object().unwrap().len() < 6, "one replica alone does not serve every sidecar: {mine}");
    let race = fleet.replicas[leader].admin(Method::PUT, "/v1/config", &headers, &routing(&fake.base_url(), "")).await;
    assert_eq!(race.status, 409, "{}", race.text());
    assert!(race.text().contains("editor-ana"), "{}", race.text());
    let h0 = history(&fleet.replicas[0]).await;
    assert_eq!(h0.as_array().unwrap().len(), 2, "seed and one edit: {h0}");
    assert_eq!(h0[1]["action"], "replace: add recap");
    assert_eq!(h0[1]["who"], "editor-ana");
    for r in &fleet.replicas[1..] {
        assert_eq!(history(r).await, h0, "{} shows another history", r.name);
    }

    // A fleet-wide open judged on every sidecar's reports, whichever replica each one reaches.
    for s in &sidecars {
        for _ in 0..2 {
            let body = r#"{"model":"probe","messages":[{"role":"user","content":"hi"}]}"#;
            let r = TestClient::default().post_json(&s.url("/v1/chat/completions"), &[], body).await.unwrap();
            assert_eq!(r.header("x-spillway-endpoint"), "od", "each failure falls back: {}", r.text());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let e = fleet_view(follower, "flaky").await;
        if e["fleet_breaker"]["state"] == "open" {
            break e;
        }
        assert!(Instant::now() < deadline, "the fleet did not open `flaky`: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["sidecars_reporting"], 6, "{view}");
    assert_eq!(view["outcomes"]["server_error"], 12, "{view}");

    // One etcd member dies: the leader keeps leading, grants stay within the pool and keep
    // being renewed, and edits still go through.
    fleet.etcd.kill(0).await;
    let quiet_until = Instant::now() + Duration::from_secs(4);
    sample_until(&sidecars, POOL, "leases renewed without etcd member 0", |h| {
        h.iter().all(|t| *t > 0) && Instant::now() > quiet_until
    })
    .await;
    assert_eq!(fleet.leaders().await, [(leader, epoch)], "a lost etcd member moved the leadership");
    let again =
        fleet.replicas[(leader + 2) % 3].admin(Method::PUT, "/v1/config", &[], &routing(&fake.base_url(), "")).await;
    assert!(again.status.is_success(), "an edit with one etcd member down: {}", again.text());
    let seed_version = again.json()["version"].as_str().unwrap().to_owned();
    every_sidecar_serves(&sidecars, &seed_version).await;
    fleet.etcd.restart(0).await;

    // The leader dies. Another replica leads within the lease (plus the time to notice), with a
    // later epoch; the sidecars' grants never exceed the pool meanwhile.
    let killed_at = Instant::now();
    fleet.kill_replica(leader).await;
    let (_, second) = fleet.one_leader(LEADER_LEASE + Duration::from_secs(3)).await;
    let took = killed_at.elapsed();
    assert!(second > epoch);
    assert!(took <= LEADER_LEASE + Duration::from_millis(1500), "a new leader after {took:?}");
    sample_until(&sidecars, POOL, "leases from the new leader", |h| h.iter().all(|t| *t > 0)).await;

    // Every replica restarts: the config and its history are etcd's, not any process's.
    let before = history(&fleet.replicas[0]).await;
    while !fleet.replicas.is_empty() {
        fleet.kill_replica(0).await;
    }
    for _ in 0..3 {
        let r = fleet.start_replica().await;
        fleet.replicas.push(r);
    }
    for r in &fleet.replicas {
        assert_eq!(history(r).await, before, "{} after the restart", r.name);
        let c = r.admin(Method::GET, "/v1/config", &[], "").await.json();
        assert_eq!(c["version"], seed_version.as_str(), "{} serves another config", r.name);
    }
    fleet.one_leader(LEADER_LEASE * 3).await;
    sample_until(&sidecars, POOL, "leases after every replica restarted", |h| h.iter().all(|t| *t > 0)).await;
}
