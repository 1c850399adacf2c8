//! The control plane as a real process (`spillway-control serve`), for tests that kill and
//! restart replicas. Every listener binds `127.0.0.1:0`; the addresses are read from its log.

use crate::harness::{Reply, TestClient};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin API's HS256 secret in these tests.
pub const ADMIN_SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

/// The binary beside the test executable (`target/<profile>/spillway-control`), which
/// `cargo nextest run --workspace` builds.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let bin = dir.join("spillway-control");
    assert!(bin.is_file(), "{} is not built: run the tests with `cargo nextest run --workspace`", bin.display());
    bin
}

/// A signed admin token for `sub` with `role`, valid for an hour.
pub fn token(sub: &str, role: &str) -> String {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .expect("sign a token")
}

pub struct ControlPlane {
    pub name: String,
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    _secret: tempfile::NamedTempFile,
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|t| t.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

impl ControlPlane {
    /// Starts `spillway-control serve` with `args` (plus the listeners, the admin secret and
    /// the name), and waits until it serves gRPC.
    pub async fn start(name: &str, args: &[String]) -> ControlPlane {
        let mut secret = tempfile::NamedTempFile::new().expect("temporary file");
        std::io::Write::write_all(&mut secret, ADMIN_SECRET.as_bytes()).expect("write the secret");
        let mut child = Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .arg("--jwt-hs256-secret-file")
            .arg(secret.path())
            .args(["--pod-name", name])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start spillway-control");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (mut grpc, mut admin, mut health) = (None, None, None);
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
                health = health.or(field(&line, "health_listen"));
                admin = admin.or(field(&line, "admin_listen"));
                grpc = grpc.or(field(&line, "listen"));
                if grpc.is_some() {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(found == Ok(true), "{name} did not start serving (see its log above)");
        // Keep draining its log into the test's output.
        let tag = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{tag}] {line}");
            }
        });
        ControlPlane {
            name: name.to_owned(),
            child,
            grpc: grpc.expect("gRPC address"),
            admin: admin.expect("admin address"),
            health: health.expect("health address"),
            _secret: secret,
        }
    }

    /// The process dies (SIGKILL): nothing renews its leadership, its streams break.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// The epoch it leads with, from its metrics; `None` while it follows.
    pub async fn leading(&self) -> Option<u64> {
        let r = TestClient::default().get(&format!("http://{}/metrics", self.health)).await.ok()?;
        let text = r.text();
        let line = text.lines().find(|l| l.starts_with("spillway_control_leader_epoch "))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().filter(|e| *e > 0)
    }

    /// An admin call with an editor's token.
    pub async fn admin(&self, method: http::Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin))
            .header("authorization", format!("Bearer {}", token("editor-ana", "editor")));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
        TestClient::default().send(req).await.expect("admin API answers")
    }
}
