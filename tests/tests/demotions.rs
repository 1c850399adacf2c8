//! Feedback demotions shared by control-plane replicas as one stored object each — a
//! `SpillwayDemotion` on the fake Kubernetes API server, driven through the real kube client, and
//! a key on a real etcd. What an operator sees: every replica applies the same demotions, an undo
//! made through any replica or with kubectl reaches all of them, a restart forgets nothing, two
//! replicas that demoted at once under one id keep both, and a deleted object is forgotten.
//!
//! Real time with 50 ms rounds; every wait is for an observable change, bounded.

use serde_json::{Value, json};
use spillway_api::config::load_str;
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::etcd::{Etcd, EtcdOptions};
use spillway_controlplane::shared::{self, DemotionStore, Shared, SharedDoc};
use spillway_controlplane::state::ConfigState;
use spillway_tests::etcd::EtcdCluster;
use spillway_tests::fake::kube::FakeKube;
use std::sync::Arc;
use std::time::Duration;

const ROUTING: &str = "endpoints:
  a: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
  b: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
  c: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
features:
  search: { hierarchy: [a, b] }
  chat: { hierarchy: [c, b] }
";

/// One replica's config state with the sharing task running while it lives.
struct Replica {
    state: Arc<ConfigState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A replica with `demote` made before it first talks to the store (as a leader that demoted
/// just before it could write), sharing through `shared`.
fn replica(shared: Shared, demote: &[(&str, &str)]) -> Replica {
    let state = ConfigState::new(Discovery::new());
    state.set_base(load_str(ROUTING, "t.yaml").unwrap(), "test", "file").unwrap();
    for (feature, endpoint) in demote {
        state.demote(feature, endpoint, "feedback fell").unwrap();
    }
    let task = tokio::spawn(shared::run(shared, state.clone(), None, Duration::from_millis(50)));
    Replica { state, task }
}

fn hierarchy(s: &ConfigState, feature: &str) -> Vec<String> {
    s.subscribe().borrow().as_ref().unwrap().features[feature].hierarchy.clone()
}

/// Waits, bounded, until `check` holds of `r` (polled: forgetting an undone demotion changes
/// no config, so there is nothing to be woken by).
async fn until(r: &Replica, what: &str, check: impl Fn(&ConfigState) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !check(&r.state) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{what}: {:?}", r.state.demotions()));
}

/// (name, feature, endpoint, active) of every stored object.
fn objects(kube: &FakeKube) -> Vec<(String, String, String, bool)> {
    let mut out: Vec<_> = kube
        .demotions("spillway")
        .iter()
        .map(|o| {
            let s = &o["spec"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&o["metadata"]["name"]), text(&s["feature"]), text(&s["endpoint"]), s["active"] == true)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotions_are_objects_every_replica_applies_and_an_undo_from_anywhere_reaches_all() {
    let kube = FakeKube::start().await;
    let leader = replica(kube.shared_state(), &[("search", "a")]);
    let follower = replica(kube.shared_state(), &[]);
    until(&follower, "the follower to apply the demotion", |s| hierarchy(s, "search") == ["b", "a"]).await;
    assert_eq!(objects(&kube), [("demotion-1".into(), "search".into(), "a".into(), true)]);

    // A restarted replica starts from the store.
    let restarted = replica(kube.shared_state(), &[]);
    until(&restarted, "the restarted replica to apply it", |s| hierarchy(s, "search") == ["b", "a"]).await;

    // An editor undoes it through the follower: the object says so, and the leader follows.
    follower.state.undo(1, "bob").unwrap();
    until(&leader, "the undo to reach the leader", |s| hierarchy(s, "search") == ["a", "b"]).await;
    let stored = kube.demotions("spillway");
    assert_eq!(stored[0]["spec"]["active"], false, "{stored:?}");
    assert_eq!(stored[0]["spec"]["undoneBy"], "bob", "{stored:?}");

    // An operator undoes another with kubectl: every replica restores the hierarchy.
    let again = leader.state.demote("chat", "c", "feedback fell").unwrap();
    assert!(again.id > 1, "a new demotion never reuses an id");
    until(&restarted, "the second demotion to spread", |s| hierarchy(s, "chat") == ["b", "c"]).await;
    let name = format!("demotion-{}", again.id);
    kube.patch_demotion("spillway", &name, &json!({"spec": {"active": false}}));
    for r in [&leader, &follower, &restarted] {
        until(r, "the kubectl undo to reach every replica", |s| hierarchy(s, "chat") == ["c", "b"]).await;
    }
    // The undo is final: a replica that still held it active does not revert it.
    assert!(objects(&kube).iter().all(|(.., active)| !active), "{:?}", objects(&kube));

    // A deleted object is forgotten by every replica, not created again.
    kube.delete_demotion("spillway", &name);
    for r in [&leader, &follower, &restarted] {
        until(r, "the deletion to reach every replica", |s| s.demotions().iter().all(|d| d.id != again.id)).await;
    }
    // No replica holds it any more, so none can create it again.
    assert_eq!(objects(&kube).len(), 1, "{:?}", objects(&kube));
}

/// Two replicas that each demoted something under the same id before either could write (two
/// leaders for a moment, at a handover): one create wins, the other renumbers, both stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demotions_made_under_one_id_both_survive() {
    let kube = FakeKube::start().await;
    let one = replica(kube.shared_state(), &[("search", "a")]);
    let two = replica(kube.shared_state(), &[("chat", "c")]);
    for r in [&one, &two] {
        until(r, "both demotions on both replicas", |s| {
            hierarchy(s, "search") == ["b", "a"] && hierarchy(s, "chat") == ["b", "c"]
        })
        .await;
    }
    let stored = objects(&kube);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_ne!(stored[0].0, stored[1].0);
    let ids = |r: &Replica| r.state.demotions().iter().map(|d| (d.id, d.endpoint.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&one), ids(&two), "the same ids everywhere");
}

/// Before demotions were objects they were one list in the shared ConfigMap: an upgrade hands
/// them over instead of forgetting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotions_kept_in_the_configmap_before_an_upgrade_become_objects() {
    let kube = FakeKube::start().await;
    let legacy = json!([{"id": 4, "feature": "search", "endpoint": "a", "reason": "feedback fell",
                         "at_unix_ms": 1, "active": true, "applies": true, "undone_by": null}]);
    kube.put_configmap("spillway", "spillway-state", &json!({"demotions.json": legacy.to_string()}));
    let r = replica(kube.shared_state(), &[]);
    until(&r, "the old demotion applied", |s| hierarchy(s, "search") == ["b", "a"]).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while objects(&kube).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the old demotion stored as an object");
    assert_eq!(objects(&kube), [("demotion-4".into(), "search".into(), "a".into(), true)]);
    let left = kube.configmap("spillway", "spillway-state").unwrap();
    assert!(left["data"].get("demotions.json").is_none(), "handed over once: {left}");
}

/// The same on a real etcd: keys under `<prefix>/demotions/`, created if absent, undone with a
/// write conditional on the revision read — also by an operator writing the key directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_demotions_are_keys_shared_undone_and_never_collide() {
    let cluster = EtcdCluster::start(1).await;
    let options = EtcdOptions { endpoints: cluster.endpoints(), prefix: "/spillway".into(), ..Default::default() };
    let etcd = Etcd::connect(&options).await.unwrap();
    let on_etcd = || Shared { demotions: DemotionStore::Etcd(etcd.clone()), checkpoint: SharedDoc::Etcd(etcd.clone()) };
    let one = replica(on_etcd(), &[("search", "a")]);
    let two = replica(on_etcd(), &[("chat", "c")]);
    for r in [&one, &two] {
        until(r, "both demotions on both replicas", |s| {
            hierarchy(s, "search") == ["b", "a"] && hierarchy(s, "chat") == ["b", "c"]
        })
        .await;
    }
    let keys = |prefix: &str| {
        let etcd = etcd.clone();
        let prefix = prefix.to_owned();
        async move {
            let options = etcd_client::GetOptions::new().with_prefix();
            let r = etcd.client().kv_client().get(prefix.as_str(), Some(options)).await.unwrap();
            r.kvs()
                .iter()
                .map(|kv| (kv.key_str().unwrap().to_owned(), serde_json::from_slice::<Value>(kv.value()).unwrap()))
                .collect::<Vec<_>>()
        }
    };
    let stored = keys("/spillway/demotions/").await;
    assert_eq!(stored.len(), 2, "{stored:?}");

    // A restart forgets nothing.
    drop(two);
    let restarted = replica(on_etcd(), &[]);
    until(&restarted, "the restarted replica to apply both", |s| s.demotions().len() == 2).await;

    // An operator undoes one by writing its key: every replica follows.
    let (key, mut value) = stored.iter().find(|(_, v)| v["endpoint"] == "c").cloned().unwrap();
    value["active"] = json!(false);
    etcd.client().kv_client().put(key.as_str(), value.to_string(), None).await.unwrap();
    for r in [&one, &restarted] {
        until(r, "the operator's undo to reach every replica", |s| hierarchy(s, "chat") == ["c", "b"]).await;
    }
    // And an undo through a replica is a conditional write of that one key.
    let id = one.state.demotions().iter().find(|d| d.endpoint == "a").unwrap().id;
    restarted.state.undo(id, "bob").unwrap();
    until(&one, "the undo to reach the other replica", |s| hierarchy(s, "search") == ["a", "b"]).await;
    let after = keys("/spillway/demotions/").await;
    let undone = after.iter().find(|(_, v)| v["endpoint"] == "a").unwrap();
    assert_eq!(undone.1["undoneBy"], "bob", "{after:?}");
}
