//! Leader election over a Kubernetes Lease (a fake API server with the real one's optimistic
//! concurrency), on tokio's paused clock: one leader at a time, a dead leader replaced after the
//! lease duration, every new leadership a later epoch — and only the leader takes telemetry and
//! grants PT leases, stamped with its epoch.

use spillway_api::config::load_str;
use spillway_api::v1::telemetry_client::TelemetryClient;
use spillway_api::v1::{Node, PoolReport, TelemetryReport};
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::election::{self, ElectionConfig, Leadership};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::leases::LeasePolicy;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy, TelemetryService};
use spillway_tests::fake::kube::FakeKube;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn elector(kube: &FakeKube, who: &str) -> (Leadership, tokio::task::JoinHandle<()>) {
    let config = ElectionConfig {
        advertise: election::Advertised { admin: format!("http://{who}:7001"), grpc: format!("https://{who}:7000") },
        ..ElectionConfig::new("spillway", "spillway-leader", who)
    };
    let e = election::run(kube.kube_client(), config);
    (e.leading, e.task)
}

/// Waits (on paused time) until `l` says `want`.
async fn until_leading(l: &mut Leadership, want: impl Fn(Option<u64>) -> bool) -> Option<u64> {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let now = *l.borrow_and_update();
            if want(now) {
                return now;
            }
            l.changed().await.unwrap();
        }
    })
    .await
    .expect("leadership did not change as expected")
}

#[tokio::test(start_paused = true)]
async fn one_leader_at_a_time_and_every_new_one_a_later_epoch() {
    let kube = FakeKube::start().await;
    let (mut a, a_task) = elector(&kube, "control-a");
    let first = until_leading(&mut a, |e| e.is_some()).await.unwrap();
    let (mut b, b_task) = elector(&kube, "control-b");
    // b looks for a while and follows: the lease is renewed.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(*b.borrow(), None);
    assert_eq!(*a.borrow(), Some(first));
    assert_eq!(kube.lease("spillway", "spillway-leader").unwrap()["spec"]["holderIdentity"], "control-a");

    // a dies without a word. b takes over once the lease has gone unrenewed for its duration.
    a_task.abort();
    let died = Instant::now();
    let second = until_leading(&mut b, |e| e.is_some()).await.unwrap();
    let took = died.elapsed();
    assert!(took >= Duration::from_secs(13) && took <= Duration::from_secs(20), "took over after {took:?}");
    assert!(second > first, "epoch {second} after {first}");

    // a comes back (a restarted pod, same name): it follows, and when b goes, leads in a new epoch.
    let (mut a2, _a2_task) = elector(&kube, "control-a");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(*a2.borrow(), None, "b still leads");
    b_task.abort();
    let third = until_leading(&mut a2, |e| e.is_some()).await.unwrap();
    assert!(third > second);
    let lease = kube.lease("spillway", "spillway-leader").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 3);
    assert_eq!(lease["metadata"]["annotations"]["spillway.dev/epoch"], third.to_string());
    assert_eq!(
        lease["metadata"]["annotations"]["spillway.dev/admin-url"], "http://control-a:7001",
        "where its views are"
    );
    assert_eq!(
        lease["metadata"]["annotations"]["spillway.dev/grpc-url"], "https://control-a:7000",
        "where sidecars' telemetry goes"
    );
}

#[tokio::test(start_paused = true)]
async fn two_candidates_racing_make_one_leader() {
    let kube = FakeKube::start().await;
    let candidates: Vec<_> = (0..3).map(|i| elector(&kube, &format!("control-{i}"))).collect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let leaders: Vec<Option<u64>> = candidates.iter().map(|(l, _)| *l.borrow()).collect();
    assert_eq!(leaders.iter().filter(|l| l.is_some()).count(), 1, "{leaders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_takes_telemetry_and_its_grants_carry_its_epoch() {
    let yaml = "endpoints:
  pt: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m, capacity: { pool: p, spill_to: od } }
  od: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
pools:
  p: { model_units: 1, tokens_per_minute_per_unit: 60000 }
features:
  chat: { hierarchy: [pt] }
";
    let d = Discovery::new();
    let state = ConfigState::new(d.clone());
    state.set_base(load_str(yaml, "t.yaml").unwrap(), "test", "file").unwrap();
    let leases = LeasePolicy {
        ttl: Duration::from_millis(300),
        delivery_margin: Duration::from_millis(50),
        ..LeasePolicy::default()
    };
    let policy = TelemetryPolicy { tick: Duration::from_millis(40), leases, ..TelemetryPolicy::default() };
    let t = Telemetry::new(state, policy);
    let _ticks = t.start();
    t.set_leading(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = t.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TelemetryService::server(served, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let report = TelemetryReport {
        node: Some(Node { id: "ns/p-1".into(), ..Default::default() }),
        pools: vec![PoolReport { pool: "p".into(), tokens_used: 0, tokens_demanded: 100, held: None }],
        ..Default::default()
    };
    let open = || async {
        let mut client = TelemetryClient::connect(url.clone()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let r = report.clone();
        tokio::spawn(async move {
            while tx.send(r.clone()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        client.report(tokio_stream::wrappers::ReceiverStream::new(rx)).await
    };
    // A follower refuses the stream: the sidecar reconnects, through the Service, to the leader.
    let refused = open().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // Leading in epoch 7: grants come, stamped with it. (A new epoch grants a sidecar holding
    // nothing only once the earlier epoch's grants have expired.)
    t.set_leading(Some(7));
    let mut answers = open().await.unwrap().into_inner();
    let grant = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let a = answers.message().await.unwrap().unwrap();
            if let Some(g) = a.leases.first() {
                return g.clone();
            }
        }
    })
    .await
    .expect("a grant once the inherited ones have expired");
    assert_eq!((grant.pool.as_str(), grant.epoch), ("p", 7));
    assert!(grant.seq >= 1);

    // Losing the lead ends the stream at once.
    t.set_leading(None);
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match answers.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
}

/// Epochs only grow, whatever the Lease says of transitions: a leader after one whose epoch came
/// from the wall clock (a control plane that ran without election) or from a far-off clock
/// still stamps later grants.
#[tokio::test(start_paused = true)]
async fn a_new_epoch_is_always_after_the_last() {
    use spillway_controlplane::election::lease::{LeaseRecord, write};
    let kube = FakeKube::start().await;
    let far = 9_000_000_000_000_000;
    let old = LeaseRecord {
        holder: "gone".into(),
        duration_s: 15,
        renew_time: "2026-12-03T00:00:00.000000Z".into(),
        transitions: 1,
        epoch: far,
        resource_version: String::new(),
        leader: Default::default(),
    };
    let api = kube::Api::namespaced(kube.kube_client(), "spillway");
    assert!(write(&api, "spillway-leader", &old).await.unwrap());
    let (mut l, _task) = elector(&kube, "control-a");
    let epoch = until_leading(&mut l, |e| e.is_some()).await.unwrap();
    assert_eq!(epoch, far + 1);
}
