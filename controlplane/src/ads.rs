//! `RoutingDiscovery.Stream`: state-of-the-world snapshot push with ACK / NACK (docs/design.md §7).
//!
//! Every response carries the whole snapshot, a version and a fresh nonce. The sidecar answers
//! each with an ACK (`version_info` = the new version) or a NACK (`version_info` = the version
//! it keeps, `error_detail` set). A request whose nonce is not the latest one sent on its stream
//! is stale and ignored. A sidecar that reconnects says which version it has; it is sent a
//! snapshot only if that is not the current one.

use crate::identity::Authenticator;
use crate::metrics::{Metrics, Tracked};
use crate::snapshot::Snapshot;
use spillway_api::v1::routing_discovery_server::{RoutingDiscovery, RoutingDiscoveryServer};
use spillway_api::v1::{DiscoveryRequest, DiscoveryResponse};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the control plane knows of one sidecar.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NodeStatus {
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
    pub last_seen_unix_ms: u64,
    pub connected: bool,
    /// Order of last contact (wall-clock milliseconds tie): who is evicted first.
    #[serde(skip)]
    seen: u64,
}

/// Connected sidecars by what they did with one version (see [`Discovery::rollout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rollout {
    pub acked: usize,
    pub nacked: usize,
    pub other_version: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Nack {
    pub version: String,
    pub error: String,
}

/// Node records kept at most; past it, the disconnected node seen longest ago is forgotten first.
/// Pods come and go: without a bound, churn alone grows the map forever.
pub const MAX_NODES: usize = 50_000;

pub struct Discovery {
    current: watch::Sender<Option<Arc<Snapshot>>>,
    nodes: Mutex<HashMap<String, NodeStatus>>,
    max_nodes: usize,
    seen: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    /// Bumped on every node status change, so tests and the admin API can wait for one.
    changes: watch::Sender<u64>,
}

/// Wall-clock milliseconds since the Unix epoch, for status and history records.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Discovery {
    pub fn new() -> Arc<Self> {
        Discovery::with_max_nodes(MAX_NODES)
    }

    /// A discovery service that keeps at most `max_nodes` node records.
    pub fn with_max_nodes(max_nodes: usize) -> Arc<Self> {
        Arc::new(Discovery {
            current: watch::Sender::new(None),
            nodes: Mutex::new(HashMap::new()),
            max_nodes: max_nodes.max(1),
            seen: Default::default(),
            metrics: Arc::default(),
            changes: watch::Sender::new(0),
        })
    }

    /// The control plane's metrics registry (served on the health port).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Publishes a snapshot; every connected sidecar is sent it unless it already has it.
    pub fn publish(&self, s: Arc<Snapshot>) {
        self.current.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.version == s.version) {
                return false;
            }
            *cur = Some(s);
            true
        });
    }

    /// Fires when a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.current.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.borrow().clone()
    }

    pub fn nodes(&self) -> HashMap<String, NodeStatus> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How far `version` has reached: connected sidecars that ACKed it, NACKed it (keeping an
    /// older one), and are still on another version. Published is not in force until ACKed.
    pub fn rollout(&self, version: &str) -> Rollout {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = Rollout::default();
        for n in nodes.values().filter(|n| n.connected) {
            if n.acked_version.as_deref() == Some(version) {
                r.acked += 1;
            } else if n.last_nack.as_ref().is_some_and(|k| k.version == version) {
                r.nacked += 1;
            } else {
                r.other_version += 1;
            }
        }
        r
    }

    /// Fires when any node's status changes.
    pub fn subscribe_nodes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records something about `node` (its streams do this as messages arrive).
    pub fn record(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if !nodes.contains_key(node) && nodes.len() >= self.max_nodes {
                // Connected nodes are never forgotten; their number is bounded by connections.
                let oldest = nodes.iter().filter(|(_, s)| !s.connected).min_by_key(|(_, s)| s.seen);
                if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                    nodes.remove(&k);
                    self.metrics.evicted(Tracked::Nodes, 1);
                }
            }
            let n = nodes.entry(node.to_owned()).or_default();
            n.last_seen_unix_ms = now_ms();
            n.seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f(n);
            self.metrics.set_tracked(Tracked::Nodes, nodes.len());
        }
        self.changes.send_modify(|c| *c += 1);
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

/// The gRPC service over a shared [`Discovery`]; every stream is authenticated first.
#[derive(Clone)]
pub struct DiscoveryService(pub Arc<Discovery>, pub Arc<Authenticator>);

impl DiscoveryService {
    pub fn server(d: Arc<Discovery>, auth: Arc<Authenticator>) -> RoutingDiscoveryServer<DiscoveryService> {
        RoutingDiscoveryServer::new(DiscoveryService(d, auth))
    }
}

#[tonic::async_trait]
impl RoutingDiscovery for DiscoveryService {
    type StreamStream = ResponseStream;

    async fn stream(&self, req: Request<Streaming<DiscoveryRequest>>) -> Result<Response<ResponseStream>, Status> {
        let mut peer = self.1.authenticate(req.metadata()).await?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let me = self.0.clone();
        tokio::spawn(async move {
            let mut snapshots = me.current.subscribe();
            let mut node = String::new();
            // The last response sent on this stream: its nonce and version.
            let mut last: Option<(String, String)> = None;
            let mut seq: u64 = 0;
            let send = |s: &Arc<Snapshot>, seq: &mut u64| {
                *seq += 1;
                let nonce = format!("{}-{seq}", fastrand::u64(..));
                let resp = DiscoveryResponse {
                    version_info: s.version.clone(),
                    nonce: nonce.clone(),
                    snapshot: Some(s.to_proto()),
                };
                (resp, (nonce, s.version.clone()))
            };
            loop {
                tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(r)) = msg else { break };
                        let declared = r.node.as_ref().map_or("", |n| n.id.as_str());
                        if let Err(refused) = peer.check_declared(declared) {
                            tracing::warn!(node = %peer.node_id, declared, "discovery stream refused: {}", refused.message());
                            let _ = tx.send(Err(refused)).await;
                            break;
                        }
                        if peer.node_id.is_empty() {
                            let _ = tx.send(Err(Status::invalid_argument("the first message must name the node"))).await;
                            break;
                        }
                        node.clone_from(&peer.node_id);
                        me.record(&node, |n| n.connected = true);
                        if r.response_nonce.is_empty() {
                            // A new stream: the sidecar says what it has.
                            if !r.version_info.is_empty() {
                                me.record(&node, |n| n.acked_version = Some(r.version_info.clone()));
                            }
                            let current = me.current();
                            if let Some(s) = current.filter(|s| s.version != r.version_info) {
                                let (resp, sent) = send(&s, &mut seq);
                                last = Some(sent);
                                if tx.send(Ok(resp)).await.is_err() {
                                    break;
                                }
                            }
                            continue;
                        }
                        let Some((nonce, version)) = &last else { continue };
                        if &r.response_nonce != nonce {
                            tracing::debug!(node = %node, "stale nonce ignored");
                            continue;
                        }
                        match r.error_detail {
                            Some(e) => {
                                tracing::warn!(node = %node, version = %version, error = %e.message, "snapshot NACKed");
                                let nack = Nack { version: version.clone(), error: e.message };
                                me.record(&node, |n| n.last_nack = Some(nack));
                            }
                            None => me.record(&node, |n| n.acked_version = Some(r.version_info.clone())),
                        }
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let current = snapshots.borrow_and_update().clone();
                        if let Some(s) = current.filter(|s| last.as_ref().is_none_or(|(_, v)| *v != s.version)) {
                            let (resp, sent) = send(&s, &mut seq);
                            last = Some(sent);
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            if !node.is_empty() {
                me.record(&node, |n| n.connected = false);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
