//! The control plane's store off Kubernetes: a real etcd cluster (the `etcd-client` crate).
//!
//! Everything lives under one key prefix (`--etcd-prefix`, default `/spillway`), so several
//! control planes can share a cluster:
//!
//! - `<prefix>/config` — the routing config in force, written only with a compare-and-swap on
//!   its `mod_revision` ([`config`]);
//! - `<prefix>/history/<seq>` — every published edit, its author, action and diff, the last
//!   [`config::HISTORY_KEPT`] kept, written in the same transaction as the config;
//! - `<prefix>/demotions/<id>` — one key per feedback demotion (`shared::demotions`);
//! - `<prefix>/shared` — the leader's checkpoint (`shared::checkpoint`);
//! - `<prefix>/leader` — the etcd election ([`election`]), the leader's key bound to its lease,
//!   and `<prefix>/epoch`, the leader epochs;
//! - `<prefix>/replicas/<name>` — each live replica's admin URL, bound to its lease ([`replicas`]).
//!
//! # Layout
//!
//! - this file: connecting (TLS, mutual TLS, timeouts) and the conditional reads and writes of
//!   one JSON document that `shared` builds on;
//! - [`config`]: the routing config, its history, and the watch that gives every replica the
//!   same snapshot without a leader;
//! - [`election`]: one leader, through etcd's election API and a kept-alive lease;
//! - [`replicas`]: the live replicas, for views merged across them.

pub mod config;
pub mod election;
pub mod replicas;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://host:2379` or `https://…`).
    pub endpoints: Vec<String>,
    /// Every key of this control plane starts with it.
    pub prefix: String,
    /// CA (PEM) that the members' certificates chain to; turns on TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for clusters that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A connected store. Cheap to clone.
///
/// One client per member, and calls go to the current one until it fails, then to the next —
/// as etcd's own Go client does. (A single client balanced over every member, as `etcd-client`
/// builds it, keeps choosing a dead member: a call that fails at once looks like the least
/// loaded.)
#[derive(Clone)]
pub struct Etcd {
    members: Arc<Vec<Member>>,
    current: Arc<AtomicUsize>,
    prefix: String,
}

struct Member {
    /// Every call bounded, so that a partitioned member cannot hold a renewal or a write for
    /// longer than a leader may go without renewing.
    quick: Client,
    /// For calls that wait by design (a campaign, a watch): no deadline, but refused by a member
    /// that has lost its quorum.
    waiting: Client,
}

/// Whether `e` says the member could not be reached or answer, so another one should be tried.
pub fn unreachable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
        }
        _ => false,
    }
}

fn read(p: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

impl Etcd {
    pub async fn connect(o: &EtcdOptions) -> Result<Etcd, String> {
        if o.endpoints.is_empty() {
            return Err("no etcd endpoints".into());
        }
        let mut base = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &o.ca {
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&o.cert, &o.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            base = base.with_tls(tls);
        }
        let mut members = Vec::new();
        for url in &o.endpoints {
            let connect = |options: ConnectOptions| async move {
                Client::connect([url.as_str()], Some(options)).await.map_err(|e| format!("etcd endpoint {url}: {e}"))
            };
            let quick = connect(base.clone().with_timeout(Duration::from_secs(3))).await?;
            let waiting = connect(base.clone().with_require_leader(true)).await?;
            members.push(Member { quick, waiting });
        }
        let prefix = o.prefix.trim_end_matches('/').to_owned();
        Ok(Etcd { members: Arc::new(members), current: Arc::new(AtomicUsize::new(0)), prefix })
    }

    fn at(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.members.len()
    }

    /// The current member's client, for one bounded call; report a failure with [`Etcd::failed`].
    pub fn client(&self) -> Client {
        self.members[self.at()].quick.clone()
    }

    /// The current member's client for calls that wait (campaign, watch, lease keep-alive).
    pub fn waiting(&self) -> Client {
        self.members[self.at()].waiting.clone()
    }

    /// A call through the current member failed unreachable: use the next one from now on.
    pub fn failed(&self, e: &etcd_client::Error) {
        if unreachable(e) && self.rotate() {
            tracing::warn!(error = %e, "etcd member unreachable; trying the next one");
        }
    }

    /// Moves to the next member whatever the error (a stream that went silent); `false` when
    /// there is no other member, or another caller moved on from this one first.
    pub fn rotate(&self) -> bool {
        let at = self.at();
        let next = (at + 1) % self.members.len();
        next != at && self.current.compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// `call` on the current member, then on each other one while the member is unreachable.
    /// For reads, and for writes that are safe to repeat (conditional ones).
    pub async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.members.len() {
            match call(self.client()).await {
                Err(e) if unreachable(&e) => {
                    self.failed(&e);
                    last = Some(e);
                }
                r => return r,
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::Internal("no etcd member".into())))
    }

    /// A transaction, on another member if the current one is unreachable. Only for conditional
    /// ones: if a first attempt did commit, the repeat fails its compare instead of applying twice.
    pub async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.retry(|c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        })
        .await
    }

    /// The full key for `name` under this control plane's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// A JSON object of strings kept at `name`, with its `mod_revision` as the version to write
    /// against ("" when it does not exist yet).
    pub async fn get_doc(&self, name: &str) -> Result<(Map<String, Value>, String), String> {
        let key = self.key(name);
        let r = self
            .retry(|c| {
                let k = key.as_str();
                async move { c.kv_client().get(k, None).await }
            })
            .await
            .map_err(|e| format!("etcd get {key}: {e}"))?;
        match r.kvs().first() {
            None => Ok((Map::new(), String::new())),
            Some(kv) => {
                let data =
                    serde_json::from_slice(kv.value()).map_err(|e| format!("{key} is not a JSON object: {e}"))?;
                Ok((data, kv.mod_revision().to_string()))
            }
        }
    }

    /// Writes `data` at `name` if it is still at `version` (as `get_doc` returned it);
    /// `Ok(false)` when someone wrote first.
    pub async fn put_doc(&self, name: &str, data: &Map<String, Value>, version: &str) -> Result<bool, String> {
        let key = self.key(name);
        let unchanged = match version {
            "" => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            v => {
                let rev = v.parse::<i64>().map_err(|_| format!("not an etcd revision: {v}"))?;
                Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)
            }
        };
        let body = serde_json::to_vec(data).map_err(|e| e.to_string())?;
        let txn = Txn::new().when([unchanged]).and_then([TxnOp::put(key.as_str(), body, None)]);
        let r = self.txn(txn).await.map_err(|e| format!("etcd write {key}: {e}"))?;
        Ok(r.succeeded())
    }
}
