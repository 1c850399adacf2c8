//! Two control-plane replicas behind one address (a round-robin TCP balancer standing in for the
//! Kubernetes Service), leader election on a fake Kubernetes API, and four real managed sidecars.
//! The regression: two replicas each leased the whole pool (1.9× it in total), and a restart
//! briefly 1.58×. Now one leader grants, and at every sample the grants the sidecars hold fit in
//! the pool — before, during and after the leader dies.
//!
//! Real time with short leases; every wait is for an observable change, bounded.

use spillway_api::config::load_str;
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::election::{self, ElectionConfig};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::leases::LeasePolicy;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy, TelemetryService};
use spillway_controlplane::webhook::{self, WebhookCert};
use spillway_dataplane::managed::ClientTls;

use spillway_tests::fake::kube::FakeKube;
use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::{TestSidecar, balancer, managed_sidecars, sample_until};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POOL: u64 = 100_000;

/// One feature on a PT pool of [`POOL`] tokens a minute, served by `fake`.
fn pool_routing(fake: &FakeProvider) -> String {
    format!(
        "endpoints:
  pt: {{ provider: openai_compatible, base_url: \"{0}\", model: m, capacity: {{ pool: p, spill_to: od }} }}
  od: {{ provider: openai_compatible, base_url: \"{0}\", model: m }}
pools:
  p: {{ model_units: 1, tokens_per_minute_per_unit: {POOL} }}
features:
  chat: {{ hierarchy: [pt] }}
",
        fake.base_url()
    )
}

struct Replica {
    telemetry: Arc<Telemetry>,
    addr: SocketAddr,
    leadership: election::Leadership,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Replica {
    /// A replica serving gRPC in plaintext, or over TLS with `tls` (certificate and key, PEM).
    async fn start(yaml: &str, kube: &FakeKube, name: &str, tls: Option<&WebhookCert>) -> Replica {
        let discovery = Discovery::new();
        let state = ConfigState::new(discovery.clone());
        state.set_base(load_str(yaml, "t.yaml").unwrap(), "test", "file").unwrap();
        let leases = LeasePolicy {
            ttl: Duration::from_millis(600),
            delivery_margin: Duration::from_millis(100),
            ..LeasePolicy::default()
        };
        let telemetry =
            Telemetry::new(state, TelemetryPolicy { tick: Duration::from_millis(50), leases, ..Default::default() });
        let ticks = telemetry.start();
        telemetry.set_leading(None);
        // Bound first: the address is what the leader advertises for sidecars' telemetry.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ElectionConfig {
            advertise: election::Advertised {
                admin: String::new(),
                grpc: format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
            },
            duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(1000),
            retry: Duration::from_millis(200),
            ..ElectionConfig::new("spillway", "spillway-leader", name)
        };
        let e = election::run(kube.kube_client(), config);
        let follow = telemetry.follow(e.leading.clone(), e.leader);
        let (leadership, elector) = (e.leading, e.task);
        let auth = Arc::new(Authenticator::SelfDeclared);
        let (d, t) = (discovery.clone(), telemetry.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(cert) = tls {
            let identity = tonic::transport::Identity::from_pem(&cert.cert_pem, &cert.key_pem);
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)).unwrap();
        }
        let server = tokio::spawn(async move {
            let _ = builder
                .add_service(DiscoveryService::server(d, auth.clone()))
                .add_service(TelemetryService::server(t, auth))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Replica { telemetry, addr, leadership, tasks: vec![ticks, elector, follow, server] }
    }

    fn leading(&self) -> Option<u64> {
        *self.leadership.borrow()
    }

    /// The process dies: nothing renews its lease, its streams break.
    fn kill(self) {
        self.tasks.iter().for_each(|t| t.abort());
        self.telemetry.set_leading(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lease_the_pool_once_and_a_new_leader_never_over_grants() {
    let fake = FakeProvider::start(FakeConfig::named("pt")).await.unwrap();
    let yaml = pool_routing(&fake);
    let kube = FakeKube::start().await;
    let a = Replica::start(&yaml, &kube, "control-a", None).await;
    let b = Replica::start(&yaml, &kube, "control-b", None).await;
    let backends = Arc::new(Mutex::new(vec![a.addr, b.addr]));
    let url = format!("http://{}", balancer(backends.clone()).await);
    let sidecars = managed_sidecars(&url, 4).await;
    // Every sidecar is leased a share by whichever replica leads; never more than the pool.
    sample_until(&sidecars, POOL, "every sidecar leased", |h| h.iter().all(|t| *t > 0)).await;
    let leaders: Vec<_> = [&a, &b].iter().map(|r| r.leading()).collect();
    assert_eq!(leaders.iter().filter(|l| l.is_some()).count(), 1, "{leaders:?}");
    let (leader, follower) = if a.leading().is_some() { (a, b) } else { (b, a) };
    let first_epoch = leader.leading().unwrap();

    // The leader dies. The follower takes over once the lease lapses; the sidecars reconnect to
    // it; at every sample in between, what they hold fits in the pool.
    backends.lock().unwrap().retain(|addr| *addr != leader.addr);
    leader.kill();
    let mut l = follower.leadership.clone();
    tokio::time::timeout(Duration::from_secs(20), l.wait_for(|e| e.is_some())).await.unwrap().unwrap();
    let second_epoch = follower.leading().unwrap();
    assert!(second_epoch > first_epoch);
    sample_until(&sidecars, POOL, "leases from the new leader", |h| h.iter().all(|t| *t > 0)).await;
    // And they are the new leader's: held grants carry its epoch once the old ones lapsed.
    let view = follower.telemetry.view();
    assert_eq!(view["pools"][0]["sidecars"], 4, "{view}");
}

/// A follower that refuses a telemetry stream names the leader, and the sidecar reconnects there:
/// sidecars that know only the follower's address still report to the leader and are leased by
/// it (before, they would retry the follower forever). Over TLS, with a certificate for the
/// Service's name only, as on Kubernetes: the leader is named by its address, and the sidecar
/// verifies it as the control plane it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_sidecars_telemetry_to_the_leader() {
    let fake = FakeProvider::start(FakeConfig::named("pt")).await.unwrap();
    let yaml = pool_routing(&fake);
    let kube = FakeKube::start().await;
    let cert = webhook::generate(&["localhost".into()]).unwrap();
    let a = Replica::start(&yaml, &kube, "control-a", Some(&cert)).await;
    let b = Replica::start(&yaml, &kube, "control-b", Some(&cert)).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while a.leading().is_none() && b.leading().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a leader");
    let (leader, follower) = if a.leading().is_some() { (a, b) } else { (b, a) };
    let mut sidecars = Vec::new();
    for i in 0..3 {
        let (url, ca) = (format!("https://localhost:{}", follower.addr.port()), cert.ca_pem.clone());
        let sidecar = TestSidecar::start_with("unused: true", move |o| {
            o.control_plane = Some(url);
            o.control_plane_tls = Some(ClientTls { ca_pem: ca.into_bytes(), identity: None });
            o.node_id = format!("shop/pod-{i}");
            o.report_interval = Duration::from_millis(100);
        });
        sidecars.push(sidecar.await.unwrap());
    }

    sample_until(&sidecars, POOL, "leases through the follower's redirect", |h| h.iter().all(|t| *t > 0)).await;
    assert!(
        follower.telemetry.leader_address().is_some_and(|l| l.starts_with("https://127.0.0.1:")),
        "the leader is named by its address, not by the certificate's name"
    );
    let view = leader.telemetry.view();
    assert_eq!(view["pools"][0]["sidecars"], 3, "{view}");
    assert_eq!(follower.telemetry.view()["pools"][0]["sidecars"], 0, "the follower took no report");
}

/// A new leader resumes what the last one decided: a fleet-wide open stays open for the rest of
/// its time instead of being forgotten with the process that judged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_the_fleet_wide_opens_of_the_last() {
    use spillway_api::v1::{EndpointReport, OutcomeCounts, TelemetryReport};
    let yaml = "endpoints:
  flaky: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
  backup: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
breakers:
  b: { window_s: 30, min_requests: 6, error_rate: 0.5, open_for_s: 300 }
features:
  chat: { hierarchy: [flaky, backup], breaker: b }
";
    let kube = FakeKube::start().await;
    let replica = || {
        let d = Discovery::new();
        let s = ConfigState::new(d.clone());
        s.set_base(load_str(yaml, "t.yaml").unwrap(), "test", "file").unwrap();
        let t = Telemetry::new(s.clone(), TelemetryPolicy::default());
        t.set_config(&load_str(yaml, "t.yaml").unwrap());
        let task = tokio::spawn(spillway_controlplane::shared::run(
            kube.shared_state(),
            s.clone(),
            Some(t.clone()),
            Duration::from_millis(50),
        ));
        (t, s, task)
    };
    let (leader, leader_state, leader_task) = replica();
    let (follower, _, _follower_task) = replica();
    // A demotion too: kept beside the checkpoint, neither erasing the other.
    leader_state.demote("chat", "flaky", "feedback fell").unwrap();
    follower.set_leading(None);
    // Three sidecars' errors: the leader opens `flaky` fleet-wide for five minutes.
    for i in 0..3 {
        let r = TelemetryReport {
            interval_ms: 10_000,
            endpoints: vec![EndpointReport {
                endpoint: "flaky".into(),
                outcomes: Some(OutcomeCounts { server_error: 4, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        leader.ingest(&format!("ns/p-{i}"), "z", &r, tokio::time::Instant::now());
    }
    leader.tick(tokio::time::Instant::now());
    let open = |t: &Telemetry| {
        let v = t.view();
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint"] == "flaky" && e["fleet_breaker"]["state"] == "open")
    };
    assert!(open(&leader));
    // The checkpoint reaches the follower through the shared state (polled: the rounds run every
    // 50 ms; bounded); then the leader dies and the follower takes over.
    tokio::time::timeout(Duration::from_secs(20), async {
        while !follower.inherited().is_some_and(|c| c.opens.iter().any(|o| o.endpoint == "flaky")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the follower to read the leader's checkpoint");
    let stored = kube.demotions("spillway");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["spec"]["endpoint"], "flaky");
    leader_task.abort();
    leader.set_leading(None);
    follower.set_leading(Some(2));
    assert!(open(&follower), "the new leader keeps the open: {}", follower.view());
}
