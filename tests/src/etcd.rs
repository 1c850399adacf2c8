//! A real etcd cluster on 127.0.0.1 for the multi-replica tests: Debian's `etcd-server`, which
//! `tests/etcd/setup.sh` installs (CI runs it from `tests/run.sh`).

use crate::harness::TestClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// `n` members, each a child process killed when the cluster is dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// A port free now. etcd must be told every member's peer URL before any member starts, so
/// it cannot bind port 0 itself; the port is released just before etcd binds it.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().map(|a: SocketAddr| a.port()).expect("local address")
}

fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("no `etcd` on PATH: run `bash tests/etcd/setup.sh` (tests/run.sh does)"))
}

impl EtcdCluster {
    pub async fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let members: Vec<Member> = (0..n)
            .map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None })
            .collect();
        let mut cluster = EtcdCluster { members, dir };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        for i in 0..n {
            cluster.healthy(i).await;
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "spillway-test"])
            // Fast elections on loopback, so a lost member is replaced in well under a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    /// Client URLs of every member, dead or alive, as a replica is configured with them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect()
    }

    /// Waits (bounded) until member `i` answers its health check.
    pub async fn healthy(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].client);
        let client = TestClient::default();
        for _ in 0..300 {
            if let Ok(r) = client.get(&url).await
                && r.status.is_success()
                && r.text().contains("true")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd member {i} not healthy after 15 s");
    }

    /// Member `i` dies (SIGKILL).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill().await;
        }
    }

    /// Member `i` comes back with its data.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        self.healthy(i).await;
    }
}
