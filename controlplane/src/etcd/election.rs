//! One leader among replicas through etcd's election API (`v3election`), for the same work and
//! with the same guarantees as the Kubernetes Lease elector (`crate::election`).
//!
//! Each replica holds an etcd lease of `duration`, kept alive every third of it, and campaigns
//! with it; etcd makes the oldest live campaigner the leader. The leadership key is bound to the
//! lease, so a leader that dies or is partitioned loses it when the lease expires on the server.
//! Before that can happen the leader steps down on its own: when no keep-alive has succeeded
//! for `renew_deadline` (< `duration`), counted from when the last successful one was *sent*.
//!
//! The epoch is taken at every win: `<prefix>/epoch` is set to the later of the wall clock in
//! milliseconds and the last epoch + 1, in a transaction that holds only while this replica's
//! leadership key is the one etcd created for it — so a replica that lost the election between
//! winning and writing cannot advance the epoch.

use super::Etcd;
use crate::election::{Advertised, Election, ElectionConfig};
use etcd_client::{Compare, CompareOp, LeaderKey, Txn, TxnOp};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

/// The leader's record in the election: who, and where its admin API and gRPC server answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Candidate {
    holder: String,
    /// The admin URL (named before there was a gRPC one).
    url: String,
    #[serde(default)]
    grpc: String,
}

/// Campaigns until the task is dropped. `config.name` names the election under the prefix.
pub fn run(etcd: Etcd, config: ElectionConfig) -> Election {
    let (tx, rx) = watch::channel(None);
    let (url_tx, url_rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        loop {
            if let Err(e) = term(&etcd, &config, &tx, &url_tx).await {
                tracing::warn!(error = %e, "leader election (etcd)");
            }
            if tx.send_if_modified(|cur| cur.take().is_some()) {
                tracing::warn!("no longer leading the control plane");
            }
            tokio::time::sleep(config.retry).await;
        }
    });
    Election { leading: rx, leader: url_rx, task }
}

fn set_url(url_tx: &watch::Sender<Option<Advertised>>, url: Option<Advertised>) {
    let url = url.filter(|u| !u.admin.is_empty() || !u.grpc.is_empty());
    url_tx.send_if_modified(|cur| {
        let changed = *cur != url;
        *cur = url;
        changed
    });
}

/// One lease's life: campaign with it, lead while it lives, return when it is lost.
async fn term(
    etcd: &Etcd,
    c: &ElectionConfig,
    tx: &watch::Sender<Option<u64>>,
    url_tx: &watch::Sender<Option<Advertised>>,
) -> Result<(), String> {
    let ttl = c.duration.as_secs().max(1) as i64;
    let lease = etcd
        .retry(|c| async move { c.lease_client().grant(ttl, None).await })
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id();
    let revoke = || async { etcd.retry(|c| async move { c.lease_client().revoke(lease).await }).await.ok() };
    let renewed = Arc::new(Mutex::new(Instant::now()));
    let keeper = tokio::spawn(keep_alive(etcd.clone(), lease, c.duration / 3, renewed.clone()));
    let _stop = AbortOnDrop(keeper);
    let alive = || renewed.lock().map(|at| at.elapsed() < c.renew_deadline).unwrap_or(false);

    let name = etcd.key(&c.name);
    let me = serde_json::to_vec(&Candidate {
        holder: c.identity.clone(),
        url: c.advertise.admin.clone(),
        grpc: c.advertise.grpc.clone(),
    })
    .map_err(|e| e.to_string())?;
    let mut elections = etcd.waiting().election_client();
    let campaign = elections.campaign(name.as_str(), me, lease);
    tokio::pin!(campaign);
    // Follow (telling where the leader is) until the campaign wins or the lease is lost.
    let won: LeaderKey = loop {
        tokio::select! {
            r = &mut campaign => {
                let r = r.map_err(|e| {
                    etcd.failed(&e);
                    format!("campaign: {e}")
                })?;
                break r.leader().cloned().ok_or("campaign answered without a leader key")?;
            }
            () = tokio::time::sleep(c.retry) => {
                if !alive() {
                    revoke().await;
                    return Err("the campaign's lease could not be kept alive".into());
                }
                set_url(url_tx, leader_url(etcd, &name).await);
            }
        }
    };
    let epoch = match take_epoch(etcd, &won).await {
        Ok(e) => e,
        Err(e) => {
            let resign = etcd_client::ResignOptions::new().with_leader(won);
            let _ = etcd
                .retry(|c| {
                    let r = resign.clone();
                    async move { c.election_client().resign(Some(r)).await }
                })
                .await;
            revoke().await;
            return Err(e);
        }
    };
    tracing::info!(epoch, "leading the control plane");
    tx.send_replace(Some(epoch));
    set_url(url_tx, Some(c.advertise.clone()));
    // Lead while renewals succeed and the key is still ours.
    loop {
        tokio::time::sleep(c.retry).await;
        if !alive() {
            tx.send_replace(None);
            tracing::warn!("cannot renew the leader lease in time; stepping down");
            revoke().await;
            return Ok(());
        }
        match still_ours(etcd, &won).await {
            Ok(true) => {}
            Ok(false) => {
                tx.send_replace(None);
                revoke().await;
                return Err("the leadership key is gone".into());
            }
            // A failed look is not a lost leadership: the lease deadline decides.
            Err(e) => tracing::warn!(error = %e, "cannot check the leadership key"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `lease` every `every`; records when the last renewal that succeeded was sent. Returns
/// only when the lease has expired on the server.
pub(super) async fn keep_alive(etcd: Etcd, lease: i64, every: Duration, renewed: Arc<Mutex<Instant>>) {
    loop {
        let (mut keeper, mut answers) = match etcd.waiting().lease_client().keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => {
                etcd.failed(&e);
                tokio::time::sleep(every / 4).await;
                continue;
            }
        };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(every.max(Duration::from_millis(200)), answers.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    if let Ok(mut at) = renewed.lock() {
                        *at = sent;
                    }
                }
                // ttl 0: the lease has expired on the server; nothing will renew it again.
                Ok(Ok(Some(_))) => return,
                Ok(Err(e)) => {
                    etcd.failed(&e);
                    break;
                }
                // No answer in time, or the stream ended: this member is no help; try the next.
                _ => {
                    etcd.rotate();
                    break;
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

async fn leader_url(etcd: &Etcd, name: &str) -> Option<Advertised> {
    let r = etcd.retry(|c| async move { c.election_client().leader(name).await }).await.ok()?;
    let kv = r.kv()?;
    serde_json::from_slice::<Candidate>(kv.value()).ok().map(|c| Advertised { admin: c.url, grpc: c.grpc })
}

fn owns(won: &LeaderKey) -> Compare {
    Compare::create_revision(won.key(), CompareOp::Equal, won.rev())
}

async fn still_ours(etcd: &Etcd, won: &LeaderKey) -> Result<bool, String> {
    let txn = Txn::new().when([owns(won)]);
    let r = etcd.txn(txn).await.map_err(|e| e.to_string())?;
    Ok(r.succeeded())
}

/// The next epoch, written while the leadership is ours.
async fn take_epoch(etcd: &Etcd, won: &LeaderKey) -> Result<u64, String> {
    let key = etcd.key("epoch");
    for _ in 0..5 {
        let r = etcd
            .retry(|c| {
                let k = key.as_str();
                async move { c.kv_client().get(k, None).await }
            })
            .await
            .map_err(|e| format!("epoch: {e}"))?;
        let (last, rev) = match r.kvs().first() {
            Some(kv) => (
                std::str::from_utf8(kv.value()).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                kv.mod_revision(),
            ),
            None => (0, 0),
        };
        let epoch = crate::ads::now_ms().max(last + 1);
        let unchanged = match rev {
            0 => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            r => Compare::mod_revision(key.as_str(), CompareOp::Equal, r),
        };
        let txn = Txn::new().when([owns(won), unchanged]).and_then([TxnOp::put(key.as_str(), epoch.to_string(), None)]);
        let r = etcd.txn(txn).await.map_err(|e| format!("epoch: {e}"))?;
        if r.succeeded() {
            return Ok(epoch);
        }
        if !still_ours(etcd, won).await? {
            return Err("lost the leadership before taking an epoch".into());
        }
    }
    Err("the epoch kept changing under us".into())
}
