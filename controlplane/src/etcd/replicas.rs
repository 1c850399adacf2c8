//! Which replicas are alive, and where their admin APIs answer: each one keeps a key under
//! `<prefix>/replicas/` bound to an etcd lease it keeps alive, so a replica that dies drops out
//! of the list within the lease's TTL. The admin API merges per-replica views (the sidecars each
//! replica serves) over this list.

use super::Etcd;
use etcd_client::{GetOptions, PutOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    pub name: String,
    /// Its admin API's base URL.
    pub url: String,
}

/// Keeps `me` registered until the task is dropped, re-registering whenever its lease is lost.
pub fn register(etcd: Etcd, me: Replica, ttl: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = once(&etcd, &me, ttl).await {
                tracing::warn!(error = %e, "cannot register this replica in etcd");
            }
            tokio::time::sleep(ttl / 3).await;
        }
    })
}

async fn once(etcd: &Etcd, me: &Replica, ttl: Duration) -> Result<(), String> {
    let secs = ttl.as_secs().max(1) as i64;
    let lease =
        etcd.retry(|c| async move { c.lease_client().grant(secs, None).await }).await.map_err(|e| e.to_string())?.id();
    let key = etcd.key(&format!("replicas/{}", me.name));
    let value = serde_json::to_vec(me).map_err(|e| e.to_string())?;
    etcd.retry(|c| {
        let (k, v) = (key.clone(), value.clone());
        async move { c.kv_client().put(k, v, Some(PutOptions::new().with_lease(lease))).await }
    })
    .await
    .map_err(|e| e.to_string())?;
    // Returns when the lease has expired on the server: register again.
    super::election::keep_alive(etcd.clone(), lease, ttl / 3, Arc::new(Mutex::new(Instant::now()))).await;
    Ok(())
}

/// The replicas registered now.
pub async fn list(etcd: &Etcd) -> Result<Vec<Replica>, String> {
    let prefix = etcd.key("replicas/");
    let r = etcd
        .retry(|c| {
            let p = prefix.as_str();
            async move { c.kv_client().get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await
        .map_err(|e| format!("etcd get {prefix}: {e}"))?;
    let mut out: Vec<Replica> = r.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
