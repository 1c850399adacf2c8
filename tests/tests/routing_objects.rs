//! The routing config as `SpillwayRouting` objects on a fake Kubernetes API server, driven by the
//! real kube-rs client and kube-runtime watcher: two replicas serve the same merge of the
//! objects; each object's status says whether it is in force and why not; a watch that the API
//! server ends and that resumes from a compacted version (410 Gone) relists and misses nothing;
//! the admin API writes only its own object, with resourceVersion preconditions, and never
//! what a GitOps-owned object defines.

use axum::http::StatusCode;
use serde_json::{Value, json};
use spillway_controlplane::admin::{Admin, AdminAuth};
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::crd_source::CrdConfig;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy};
use spillway_tests::fake::kube::FakeKube;
use spillway_tests::harness::TestClient;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "spillway";
const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

struct Replica {
    state: Arc<ConfigState>,
    crd: Arc<CrdConfig>,
}

async fn replica(kube: &FakeKube) -> Replica {
    let state = ConfigState::new(Discovery::new());
    let crd = CrdConfig::start(kube.kube_client(), NS, state.clone()).await.expect("the objects are listed");
    Replica { state, crd }
}

fn hierarchy(r: &Replica, feature: &str) -> Vec<String> {
    r.state
        .subscribe()
        .borrow()
        .as_ref()
        .and_then(|c| c.features.get(feature))
        .map(|f| f.hierarchy.clone())
        .unwrap_or_default()
}

/// Waits (bounded) until `check` holds on the config `r` serves.
async fn until(r: &Replica, what: &str, check: impl Fn(&Replica) -> bool) {
    let mut rx = r.state.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !check(r) {
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(waited.is_ok(), "still waiting for: {what}");
}

/// Waits (bounded) until object `name`'s Accepted condition has `status`; returns it.
async fn accepted(kube: &FakeKube, name: &str, status: &str) -> Value {
    for _ in 0..200 {
        let o = kube.routing(NS, name).unwrap_or_default();
        let c = o["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Accepted")).cloned();
        if let Some(c) = c.filter(|c| c["status"] == status) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never got Accepted={status}: {}", kube.routing(NS, name).unwrap_or_default());
}

fn models() -> Value {
    json!({"endpoints": {"a": {"provider": "openai", "model": "gpt-4o"}, "b": {"provider": "anthropic", "model": "claude"}}})
}

fn features(h: &[&str]) -> Value {
    json!({"features": {"chat": {"hierarchy": h}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_the_merge_of_the_objects_and_report_on_each() {
    let kube = FakeKube::start().await;
    kube.apply_routing(NS, "models", models());
    kube.apply_routing(NS, "features", features(&["a", "b"]));
    let (one, two) = (replica(&kube).await, replica(&kube).await);
    assert_eq!(hierarchy(&one, "chat"), ["a", "b"]);
    assert_eq!(one.state.version(), two.state.version(), "both replicas serve the same snapshot");
    accepted(&kube, "models", "True").await;
    accepted(&kube, "features", "True").await;

    // An edit with kubectl reaches both.
    kube.apply_routing(NS, "features", features(&["b", "a"]));
    for r in [&one, &two] {
        until(r, "the edit", |r| hierarchy(r, "chat") == ["b", "a"]).await;
    }
    let edited = one.state.version();

    // An invalid object is not merged: the last good config stays; its status says why, and the
    // others say they are held back by it.
    kube.apply_routing(NS, "broken", json!({"features": {"recap": {"hierarchy": ["nowhere"]}}}));
    let c = accepted(&kube, "broken", "False").await;
    assert_eq!(c["reason"], "Invalid");
    assert!(c["message"].as_str().unwrap().contains("nowhere"), "{c}");
    let held = accepted(&kube, "models", "False").await;
    assert_eq!(held["reason"], "OtherObjectInvalid");
    assert_eq!(one.state.version(), edited);
    kube.delete_routing(NS, "broken");
    accepted(&kube, "models", "True").await;

    // The API server ends every watch and forgets its history: the replicas resume, get 410 Gone,
    // relist, and a change made meanwhile is not missed.
    kube.compact();
    kube.apply_routing(NS, "features", features(&["a"]));
    for r in [&one, &two] {
        until(r, "the change after the compaction", |r| hierarchy(r, "chat") == ["a"]).await;
    }
}

struct Api {
    base: String,
    client: TestClient,
}

impl Replica {
    /// An admin API over this replica (not yet serving).
    fn admin(&self) -> Arc<Admin> {
        let telemetry = Telemetry::new(self.state.clone(), TelemetryPolicy::default());
        let auth = AdminAuth::hs256(SECRET.as_bytes()).unwrap();
        Admin::new(self.state.discovery().clone(), self.state.clone(), telemetry, auth)
    }
}

impl Api {
    /// The replica's admin API writing through to its objects, serving on 127.0.0.1.
    async fn start(r: &Replica) -> Api {
        let admin = r.admin();
        admin.write_through_crd(r.crd.clone());
        Api::serve(admin).await.0
    }

    /// Serves `admin` on 127.0.0.1:0; the API and its port.
    async fn serve(admin: Arc<Admin>) -> (Api, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(spillway_controlplane::listen::serve(
            listener,
            admin.router(),
            spillway_controlplane::listen::Timeouts::API,
        ));
        (Api { base: format!("http://127.0.0.1:{port}"), client: TestClient::default() }, port)
    }

    async fn call(&self, method: http::Method, path: &str) -> (StatusCode, Value) {
        let token = spillway_tests::control::token("bo", "editor");
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = self.client.send(req).await.unwrap();
        (r.status, r.json())
    }

    async fn put(&self, body: &Value, if_match: Option<&str>) -> (StatusCode, Value) {
        let token = spillway_tests::control::token("ana", "editor");
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str()), ("x-spillway-reason", "add recap")];
        if let Some(m) = if_match {
            headers.push(("if-match", m));
        }
        let req =
            headers.iter().fold(http::Request::put(format!("{}/v1/config", self.base)), |b, (k, v)| b.header(*k, *v));
        let r = self.client.send(req.body(http_body_util::Full::new(body.to_string().into())).unwrap()).await.unwrap();
        (r.status, r.json())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_writes_its_own_object_and_never_a_gitops_one() {
    let kube = FakeKube::start().await;
    kube.apply_routing(NS, "models", models());
    kube.apply_routing(NS, "features", features(&["a", "b"]));
    let (one, two) = (replica(&kube).await, replica(&kube).await);
    let api = Api::start(&one).await;

    // The whole config as read, plus a feature: only the new feature goes to the admin object.
    let mut desired: Value = serde_json::to_value(one.state.subscribe().borrow().as_deref().unwrap()).unwrap();
    desired["features"]["recap"] = json!({"hierarchy": ["b"]});
    let (status, v) = api.put(&desired, None).await;
    assert_eq!(status, 200, "{v}");
    let admin = kube.routing(NS, "spillway-admin").expect("the admin object");
    assert_eq!(admin["spec"]["features"].as_object().unwrap().keys().collect::<Vec<_>>(), ["recap"], "{admin}");
    assert_eq!(admin["metadata"]["labels"]["spillway.dev/owner"], "admin-api");
    assert_eq!(admin["metadata"]["annotations"]["spillway.dev/changed-by"], "ana");
    for r in [&one, &two] {
        until(r, "the admin edit", |r| hierarchy(r, "recap") == ["b"]).await;
    }
    let history = one.state.history();
    assert_eq!(history.last().unwrap().who, "ana");
    assert!(history.last().unwrap().action.contains("add recap"), "{:?}", history.last());

    // Changing what the `features` object defines is refused, naming it.
    let mut theirs = desired.clone();
    theirs["features"]["chat"]["hierarchy"] = json!(["b", "a"]);
    let (status, v) = api.put(&theirs, None).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("SpillwayRouting/features"), "{v}");

    // Two edits based on the same generation (the ETag of GET /v1/config): the first wins, the
    // second gets 409 and writes nothing. A status write in between is not a change.
    let read = api.client.get(&format!("{}/v1/config", api.base)).await.unwrap();
    assert_eq!(read.status, 401, "a token is needed");
    let stale = admin["metadata"]["generation"].to_string();
    desired["features"]["recap"] = json!({"hierarchy": ["a"]});
    let (status, v) = api.put(&desired, Some(&stale)).await;
    assert_eq!(status, 200, "{v}");
    desired["features"]["recap"] = json!({"hierarchy": ["a", "b"]});
    let (status, v) = api.put(&desired, Some(&stale)).await;
    assert_eq!(status, 409, "{v}");
    until(&two, "the first of the two edits", |r| hierarchy(r, "recap") == ["a"]).await;
}

/// A first start in a namespace without objects: `--config` becomes the admin API's object, once,
/// whichever replica starts first; later starts keep what is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_seeds_an_empty_namespace_once() {
    let kube = FakeKube::start().await;
    let file = |h: &[&str]| {
        let mut c: spillway_api::config::RoutingConfig = serde_json::from_value(models()).unwrap();
        c.features = serde_json::from_value(features(h)["features"].clone()).unwrap();
        c
    };
    let one = replica(&kube).await;
    assert_eq!(one.state.version(), "", "nothing to serve yet");
    one.crd.seed(file(&["a"]), "file:/etc/spillway/routing.yaml").await.unwrap();
    until(&one, "the seed", |r| hierarchy(r, "chat") == ["a"]).await;
    let two = replica(&kube).await;
    two.crd.seed(file(&["b"]), "file:/etc/spillway/routing.yaml").await.unwrap();
    assert_eq!(hierarchy(&two, "chat"), ["a"], "a later seed changes nothing");
    let admin = kube.routing(NS, "spillway-admin").unwrap();
    assert_eq!(admin["metadata"]["generation"], 1, "{admin}");
}

fn admission(operation: &str, name: &str, spec: Value) -> Vec<u8> {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "operation": operation, "namespace": NS,
        "kind": {"group": "spillway.dev", "version": "v1alpha1", "kind": "SpillwayRouting"},
        "object": {"apiVersion": "spillway.dev/v1alpha1", "kind": "SpillwayRouting",
                   "metadata": {"name": name, "namespace": NS}, "spec": spec}}})
    .to_string()
    .into_bytes()
}

/// `kubectl apply` of an object that could not be merged is refused at admission, naming every
/// problem; a good object, an edit of a broken one into a good one, and any deletion pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_that_cannot_be_merged_are_refused_at_admission() {
    use spillway_controlplane::crd_admission::review;
    let kube = FakeKube::start().await;
    kube.apply_routing(NS, "models", models());
    kube.apply_routing(NS, "features", features(&["a"]));
    let r = replica(&kube).await;
    let verdict = |body: Vec<u8>| {
        let v = serde_json::to_value(review(&body, Some(&r.crd)).unwrap()).unwrap();
        assert_eq!(v["response"]["uid"], "u-1");
        v["response"].clone()
    };

    let good = verdict(admission("CREATE", "recap", json!({"features": {"recap": {"hierarchy": ["b"]}}})));
    assert_eq!(good["allowed"], true, "{good}");
    let dangling = verdict(admission("CREATE", "recap", json!({"features": {"recap": {"hierarchy": ["nowhere"]}}})));
    assert_eq!(dangling["allowed"], false);
    let message = dangling["status"]["message"].as_str().unwrap();
    assert!(message.contains("SpillwayRouting/recap") && message.contains("nowhere"), "{message}");
    // A name another object defines: refused, naming it.
    let twice = verdict(admission("CREATE", "more", json!({"endpoints": {"a": {"provider": "openai", "model": "m"}}})));
    assert_eq!(twice["allowed"], false);
    assert!(twice["status"]["message"].as_str().unwrap().contains("SpillwayRouting/models"), "{twice}");
    // What a schema cannot check either: an unknown field.
    let typo =
        verdict(admission("UPDATE", "features", json!({"features": {"chat": {"hierarchy": ["a"], "retries": 3}}})));
    assert_eq!(typo["allowed"], false);
    assert!(typo["status"]["message"].as_str().unwrap().contains("retries"), "{typo}");
    // Replacing an object's own entries is judged without its old self.
    let edit = verdict(admission("UPDATE", "features", features(&["b", "a"])));
    assert_eq!(edit["allowed"], true, "{edit}");
    let delete = verdict(admission("DELETE", "models", Value::Null));
    assert_eq!(delete["allowed"], true);
}

/// The history is kept on the Kubernetes API (ControllerRevisions): every replica lists the same
/// one, a replica started later too, and a rollback through any replica restores a version —
/// unless it would change what a GitOps-owned object now defines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_shared_durable_and_a_rollback_target() {
    let kube = FakeKube::start().await;
    kube.apply_routing(NS, "models", models());
    kube.apply_routing(NS, "features", features(&["a", "b"]));
    let one = replica(&kube).await;
    let first = one.state.version();
    kube.apply_routing(NS, "features", features(&["b", "a"]));
    until(&one, "the kubectl edit", |r| hierarchy(r, "chat") == ["b", "a"]).await;
    let api_one = Api::start(&one).await;
    let mut desired: Value = serde_json::to_value(one.state.subscribe().borrow().as_deref().unwrap()).unwrap();
    desired["features"]["recap"] = json!({"hierarchy": ["b"]});
    assert_eq!(api_one.put(&desired, None).await.0, 200);
    until(&one, "the first admin edit", |r| hierarchy(r, "recap") == ["b"]).await;
    let second = one.state.version();
    desired["features"]["recap"] = json!({"hierarchy": ["a"]});
    assert_eq!(api_one.put(&desired, None).await.0, 200);
    until(&one, "the second admin edit", |r| hierarchy(r, "recap") == ["a"]).await;

    // A replica started now lists the same history.
    let two = replica(&kube).await;
    let api_two = Api::start(&two).await;
    let (status, h1) = api_one.call(http::Method::GET, "/v1/history").await;
    assert_eq!(status, 200, "{h1}");
    let changes = h1["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{h1}");
    assert_eq!(changes[0]["version"], first.as_str());
    assert!(changes[1]["action"].as_str().unwrap().contains("SpillwayRouting/features"), "{h1}");
    assert_eq!(changes[3]["who"], "ana");
    let diff = changes[1]["diff"].as_str().unwrap();
    let lines = |sign: char, what: &str| diff.lines().any(|l| l.starts_with(sign) && l.contains(what));
    assert!(lines('-', "\"a\",") && lines('+', "\"b\","), "{diff}");
    assert_eq!(api_two.call(http::Method::GET, "/v1/history").await.1, h1, "another replica, the same history");
    assert_eq!(kube.revisions(NS).len(), 4, "one revision per version, however many replicas");

    // Back to the first version would change `chat`, which the features object now defines.
    let (status, v) = api_two.call(http::Method::POST, &format!("/v1/config/rollback/{first}")).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("SpillwayRouting/features"), "{v}");
    // Back to the first admin edit: through the replica that started after it.
    let (status, v) = api_two.call(http::Method::POST, &format!("/v1/config/rollback/{second}")).await;
    assert_eq!(status, 200, "{v}");
    for r in [&one, &two] {
        until(r, "the rollback", |r| hierarchy(r, "recap") == ["b"]).await;
    }
    let (_, unknown) = api_one.call(http::Method::POST, "/v1/config/rollback/0123456789abcdef").await;
    assert!(unknown["error"].as_str().unwrap().contains("no known version"), "{unknown}");
}

/// On Kubernetes each replica knows only the sidecars connected to it; `/v1/nodes` and the
/// rollout through any replica gather every ready replica's share, found from the control
/// plane's Service endpoints (EndpointSlices, port `admin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_views_gather_every_ready_replica_found_from_the_service() {
    use spillway_controlplane::forward::{PeerSource, Peers};
    let kube = FakeKube::start().await;
    kube.apply_routing(NS, "models", models());
    kube.apply_routing(NS, "features", features(&["a"]));
    let (one, two) = (replica(&kube).await, replica(&kube).await);
    let version = one.state.version();
    for (r, node) in [(&one, "shop/pod-1"), (&one, "shop/pod-2"), (&two, "shop/pod-3")] {
        r.state.discovery().record(node, |n| {
            n.connected = true;
            n.acked_version = Some(version.clone());
        });
    }
    let mut apis = Vec::new();
    for (r, name) in [(&one, "control-0"), (&two, "control-1")] {
        let admin = r.admin();
        let service = PeerSource::Service {
            api: kube::Api::namespaced(kube.kube_client(), NS),
            service: "spillway-control".into(),
        };
        admin.merge_views(Peers::from(service, name));
        let (api, port) = Api::serve(admin).await;
        kube.endpoint_slice(
            NS,
            &format!("spillway-control-{name}"),
            "spillway-control",
            port,
            &[(name, "127.0.0.1", true)],
        );
        apis.push(api);
    }
    // A replica that is not ready is not asked.
    kube.endpoint_slice(NS, "spillway-control-starting", "spillway-control", 1, &[("control-2", "127.0.0.1", false)]);

    let (status, nodes) = apis[0].call(http::Method::GET, "/v1/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let ids: Vec<&String> = nodes["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["shop/pod-1", "shop/pod-2", "shop/pod-3"], "{nodes}");
    assert_eq!(nodes["nodes"]["shop/pod-3"]["replica"], "control-1");
    assert_eq!(nodes["replicas"].as_array().unwrap().len(), 2, "{nodes}");
    let (_, config) = apis[1].call(http::Method::GET, "/v1/config").await;
    assert_eq!(config["sidecars"]["acked"], 3, "{config}");
    let (_, mine) = apis[1].call(http::Method::GET, "/v1/nodes?scope=replica").await;
    assert_eq!(mine["nodes"].as_object().unwrap().len(), 1, "{mine}");
}
