//! The admin API over a real socket: JWT role checks (missing, expired, wrong role, wrong key),
//! precise validation errors, replace with who/when/diff in the history, rollback, node status,
//! the fleet and feedback views, releasing a fleet-wide open and undoing a demotion.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use spillway_api::config::load_str;
use spillway_controlplane::admin::{Admin, AdminAuth};
use spillway_controlplane::ads::Discovery;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"admin-test-secret-of-thirty-two-bytes";

fn config(feature: &str) -> String {
    format!(
        "endpoints:\n  e: {{ provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }}\nfeatures:\n  {feature}: {{ hierarchy: [e] }}\n"
    )
}

fn token(sub: &str, role: &str, expires_in: i64, secret: &[u8]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    encode(
        &Header::default(),
        &json!({"sub": sub, "role": role, "exp": now + expires_in}),
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

struct Api {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self.client.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

async fn start() -> (Api, std::sync::Arc<Discovery>, std::sync::Arc<ConfigState>) {
    let d = Discovery::new();
    let state = ConfigState::new(d.clone());
    state.set_base(load_str(&config("chat"), "t").unwrap(), "test", "file").unwrap();
    let telemetry = Telemetry::new(state.clone(), TelemetryPolicy::default());
    let admin = Admin::new(d.clone(), state.clone(), telemetry, AdminAuth::hs256(SECRET).unwrap());
    (serve(admin).await, d, state)
}

/// Serves `admin` on 127.0.0.1:0.
async fn serve(admin: std::sync::Arc<Admin>) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(spillway_controlplane::listen::serve(
        listener,
        admin.router(),
        spillway_controlplane::listen::Timeouts::API,
    ));
    Api { base, client: Client::builder(TokioExecutor::new()).build_http() }
}

#[tokio::test]
async fn tokens_must_be_present_valid_unexpired_and_carry_the_role() {
    let (api, _, _) = start().await;
    let viewer = token("ana", "viewer", 600, SECRET);
    assert_eq!(api.call("GET", "/v1/config", None, "").await.0, 401, "missing");
    assert_eq!(api.call("GET", "/v1/config", Some(&token("ana", "viewer", -3600, SECRET)), "").await.0, 401, "expired");
    assert_eq!(
        api.call("GET", "/v1/config", Some(&token("ana", "viewer", 600, b"another-key-of-at-least-32-bytes!!")), "")
            .await
            .0,
        401,
        "wrong key"
    );
    assert_eq!(
        api.call("GET", "/v1/config", Some(&token("ana", "guest", 600, SECRET)), "").await.0,
        403,
        "unknown role"
    );
    let (status, v) = api.call("GET", "/v1/config", Some(&viewer), "").await;
    assert_eq!(status, 200);
    assert!(v["config"]["features"]["chat"].is_object());
    let (status, v) = api.call("PUT", "/v1/config", Some(&viewer), &config("search")).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("role editor required")), "viewers cannot write");
}

#[tokio::test]
async fn validation_errors_are_precise_and_nothing_invalid_is_published() {
    let (api, d, _) = start().await;
    let editor = token("bo", "editor", 600, SECRET);
    let before = d.current().unwrap().version.clone();
    let bad = "endpoints: {}\nfeatures:\n  chat: { hierarchy: [nope] }\n";
    let (status, v) = api.call("POST", "/v1/config/validate", Some(&editor), bad).await;
    assert_eq!(status, 422);
    assert_eq!(v["errors"][0]["path"], "features.chat.hierarchy[0]");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("unknown endpoint `nope`"));
    assert_eq!(api.call("PUT", "/v1/config", Some(&editor), bad).await.0, 422);
    assert_eq!(d.current().unwrap().version, before, "the invalid config was not pushed");
    let (status, v) = api.call("POST", "/v1/config/validate", Some(&editor), &config("search")).await;
    assert_eq!((status, v["valid"].as_bool()), (200, Some(true)));
    assert_eq!(d.current().unwrap().version, before, "validate is a dry run");
}

#[tokio::test]
async fn changes_are_recorded_and_can_be_rolled_back() {
    let (api, d, _) = start().await;
    let editor = token("bo", "editor", 600, SECRET);
    let first = d.current().unwrap().version.clone();
    let (status, change) = api.call("PUT", "/v1/config", Some(&editor), &config("search")).await;
    assert_eq!(status, 200);
    let second = change["version"].as_str().unwrap().to_owned();
    assert_eq!(d.current().unwrap().version, second, "published");
    assert_eq!(change["who"], "bo");
    let diff = change["diff"].as_str().unwrap();
    assert!(diff.contains("-    \"chat\"") && diff.contains("+    \"search\""), "{diff}");

    let (status, back) = api.call("POST", &format!("/v1/config/rollback/{first}"), Some(&editor), "").await;
    assert_eq!((status, back["action"].as_str()), (200, Some("rollback")));
    assert_eq!(d.current().unwrap().version, first);
    assert_eq!(api.call("POST", "/v1/config/rollback/unknown", Some(&editor), "").await.0, 404);

    let viewer = token("ana", "viewer", 600, SECRET);
    let (_, h) = api.call("GET", "/v1/history", Some(&viewer), "").await;
    let actions: Vec<&str> = h["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["file", "replace", "rollback"]);
    assert_eq!(h["changes"][1]["previous"], first);
    assert!(h["changes"][1]["at_unix_ms"].as_u64().unwrap() > 0);
    let (status, n) = api.call("GET", "/v1/nodes", Some(&viewer), "").await;
    assert_eq!((status, n["nodes"].is_object()), (200, true));
}

#[tokio::test]
async fn fleet_and_feedback_views_are_read_by_viewers_and_changed_by_editors() {
    let (api, d, state) = start().await;
    let (viewer, editor) = (token("ana", "viewer", 600, SECRET), token("bo", "editor", 600, SECRET));
    let (status, fleet) = api.call("GET", "/v1/fleet", Some(&viewer), "").await;
    assert_eq!((status, fleet["endpoints"].as_array().map(Vec::len)), (200, Some(0)));
    assert_eq!(fleet["connected_sidecars"], 0);
    assert_eq!(api.call("GET", "/v1/fleet", None, "").await.0, 401);
    let (status, v) = api.call("POST", "/v1/fleet/release/e", Some(&viewer), "").await;
    assert_eq!((status, v["error"].as_str()), (403, Some("role editor required")));
    let (status, v) = api.call("POST", "/v1/fleet/release/e", Some(&editor), "").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("endpoint e is not open fleet-wide")));

    // A demotion (as feedback would make one) is visible and undone by an editor.
    let yaml = "endpoints:\n  e: { provider: openai, model: m }\n  f: { provider: openai, model: m }\nfeatures:\n  chat: { hierarchy: [e, f] }\n";
    state.set_base(load_str(yaml, "t").unwrap(), "test", "replace").unwrap();
    let dem = state.demote("chat", "e", "user feedback fell").unwrap();
    let demoted = d.current().unwrap().version.clone();
    let (status, fb) = api.call("GET", "/v1/feedback", Some(&viewer), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (fb["demotions"][0]["endpoint"].as_str(), fb["demotions"][0]["active"].as_bool()),
        (Some("e"), Some(true))
    );
    assert_eq!(fb["demotions"][0]["reason"], "user feedback fell");
    let undo = format!("/v1/demotions/{}/undo", dem.id);
    assert_eq!(api.call("POST", &undo, Some(&viewer), "").await.0, 403);
    let (status, v) = api.call("POST", &undo, Some(&editor), "").await;
    assert_eq!((status, v["active"].as_bool(), v["undone_by"].as_str()), (200, Some(false), Some("bo")));
    assert_ne!(d.current().unwrap().version, demoted, "the restored config is published");
    let (_, config) = api.call("GET", "/v1/config", Some(&viewer), "").await;
    assert_eq!(config["config"]["features"]["chat"]["hierarchy"], json!(["e", "f"]));
    let (status, v) = api.call("POST", &undo, Some(&editor), "").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("no active demotion 1")));
    assert_eq!(api.call("POST", "/v1/demotions/x/undo", Some(&editor), "").await.0, 400);
}

#[test]
fn an_empty_or_short_hs256_secret_is_refused_at_start() {
    for secret in [&b""[..], b"  \n", b"short-secret"] {
        let e = AdminAuth::hs256(secret).err().expect("refused");
        assert!(e.contains("at least 32"), "{e}");
    }
    assert!(AdminAuth::hs256(b"  admin-test-secret-of-thirty-two-bytes\n").is_ok(), "whitespace around it is trimmed");
}

#[tokio::test]
async fn a_token_not_yet_valid_or_with_critical_extensions_is_refused() {
    let (api, _, _) = start().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let key = EncodingKey::from_secret(SECRET);
    let early = encode(
        &Header::default(),
        &json!({"sub": "ana", "role": "viewer", "exp": now + 7200, "nbf": now + 3600}),
        &key,
    )
    .unwrap();
    assert_eq!(api.call("GET", "/v1/config", Some(&early), "").await.0, 401, "nbf an hour ahead");
    let fine =
        encode(&Header::default(), &json!({"sub": "ana", "role": "viewer", "exp": now + 7200, "nbf": now - 10}), &key)
            .unwrap();
    assert_eq!(api.call("GET", "/v1/config", Some(&fine), "").await.0, 200, "nbf in the past");

    // A header with `crit`, signed with the right key: the extension is not understood, so the
    // token is not honoured (RFC 7515 §4.1.11).
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp-policy"],"exp-policy":"lenient"}"#);
    let claims = b64.encode(json!({"sub": "ana", "role": "editor", "exp": now + 600}).to_string());
    let signing_input = format!("{header}.{claims}");
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    let crit = format!("{signing_input}.{sig}");
    let (status, v) = api.call("GET", "/v1/config", Some(&crit), "").await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("crit"), "{v}");
}

/// One owner per config: while a watched directory owns it, writes through the API are refused
/// with 409 naming the directory — never accepted and then silently overwritten by the files.
#[tokio::test]
async fn a_directory_owned_config_refuses_api_writes() {
    let (api, d, state) = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routing.yaml"), config("from_files")).unwrap();
    let _source = spillway_controlplane::source::DirSource::start(dir.path().to_owned(), state.clone()).unwrap();
    let owned = d.current().unwrap().version.clone();
    let editor = token("bo", "editor", 600, SECRET);
    let (status, v) = api.call("PUT", "/v1/config", Some(&editor), &config("from_api")).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&dir.path().display().to_string()), "{v}");
    let first = state.history()[0].version.clone();
    assert_eq!(api.call("POST", &format!("/v1/config/rollback/{first}"), Some(&editor), "").await.0, 409);
    assert_eq!(d.current().unwrap().version, owned, "the directory's config stays in force");
}

/// Several replicas each reading the same file at start: an edit through one would reach neither
/// the others nor its own restart, so it is refused, naming the ways that do work.
#[tokio::test]
async fn a_file_held_by_several_replicas_refuses_api_writes() {
    let (api, d, state) = start().await;
    let before = d.current().unwrap().version.clone();
    state.set_owner(spillway_controlplane::state::Owner::ReplicatedFile("/etc/spillway/routing.yaml".into()));
    let editor = token("bo", "editor", 600, SECRET);
    let (status, v) = api.call("PUT", "/v1/config", Some(&editor), &config("from_api")).await;
    assert_eq!(status, 409, "{v}");
    let message = v["error"].as_str().unwrap();
    assert!(message.contains("/etc/spillway/routing.yaml") && message.contains("--etcd-endpoints"), "{v}");
    assert_eq!(d.current().unwrap().version, before);
}

/// With several replicas the admin Service may pick a follower: the views only the leader has
/// (it alone hears telemetry) come from the leader, with the caller's token checked there too.
#[tokio::test]
async fn a_follower_answers_with_the_leaders_fleet_and_feedback_views() {
    let (leader_api, _, _) = start().await;
    let d = Discovery::new();
    let state = ConfigState::new(d.clone());
    state.set_base(load_str(&config("chat"), "t").unwrap(), "test", "file").unwrap();
    let telemetry = Telemetry::new(state.clone(), TelemetryPolicy::default());
    telemetry.set_leading(None);
    let (url_tx, url_rx) = tokio::sync::watch::channel(None);
    let admin = Admin::replica(d, state, telemetry, AdminAuth::hs256(SECRET).unwrap(), url_rx);
    let follower = serve(admin).await;
    let viewer = token("ana", "viewer", 600, SECRET);
    let editor = token("bo", "editor", 600, SECRET);

    // No leader known yet: a clear, retryable 503, not an empty view.
    let (status, v) = follower.call("GET", "/v1/fleet", Some(&viewer), "").await;
    assert_eq!(status, 503, "{v}");
    url_tx.send_replace(Some(spillway_controlplane::election::Advertised {
        admin: leader_api.base.clone(),
        grpc: String::new(),
    }));
    let (status, from_follower) = follower.call("GET", "/v1/fleet", Some(&viewer), "").await;
    let (_, from_leader) = leader_api.call("GET", "/v1/fleet", Some(&viewer), "").await;
    assert_eq!(status, 200);
    assert_eq!(from_follower["endpoints"], from_leader["endpoints"]);
    assert_eq!(follower.call("GET", "/v1/feedback", Some(&viewer), "").await.0, 200);
    // A release goes to the leader, which says the endpoint is not open there.
    let (status, v) = follower.call("POST", "/v1/fleet/release/e", Some(&editor), "").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not open fleet-wide"));
    // The leader checks the token itself; a viewer may not release.
    assert_eq!(follower.call("POST", "/v1/fleet/release/e", Some(&viewer), "").await.0, 403);
}
