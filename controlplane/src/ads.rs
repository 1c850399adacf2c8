//! `RoutingDiscovery.Stream`: state-of-the-world snapshot push with ACK / NACK (docs/design.md §7).
//!
//! Every response carries the whole snapshot, a version and a fresh nonce. The sidecar answers
//! each with an ACK (`version_info` = the new version) or a NACK (`version_info` = the version
//! it keeps, `error_detail` set). A request whose nonce is not the latest one sent on its stream
//! is stale and ignored. A sidecar that reconnects says which version it has; it is sent a
//! snapshot only if that is not the current one.

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
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Nack {
    pub version: String,
    pub error: String,
}

pub struct Discovery {
    current: watch::Sender<Option<Arc<Snapshot>>>,
    nodes: Mutex<HashMap<String, NodeStatus>>,
    /// Bumped on every node status change, so tests and the admin API can wait for one.
    changes: watch::Sender<u64>,
}

/// Wall-clock milliseconds since the Unix epoch, for status and history records.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Discovery {
    pub fn new() -> Arc<Self> {
        Arc::new(Discovery {
            current: watch::Sender::new(None),
            nodes: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
        })
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

    /// Fires when any node's status changes.
    pub fn subscribe_nodes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let n = nodes.entry(node.to_owned()).or_default();
            n.last_seen_unix_ms = now_ms();
            f(n);
        }
        self.changes.send_modify(|c| *c += 1);
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

/// The gRPC service over a shared [`Discovery`].
#[derive(Clone)]
pub struct DiscoveryService(pub Arc<Discovery>);

impl DiscoveryService {
    pub fn server(d: Arc<Discovery>) -> RoutingDiscoveryServer<DiscoveryService> {
        RoutingDiscoveryServer::new(DiscoveryService(d))
    }
}

#[tonic::async_trait]
impl RoutingDiscovery for DiscoveryService {
    type StreamStream = ResponseStream;

    async fn stream(&self, req: Request<Streaming<DiscoveryRequest>>) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let me = self.0.clone();
        tokio::spawn(async move {
            let mut snapshots = me.current.subscribe();
            let mut node = String::from("<unknown>");
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
                        if let Some(n) = &r.node {
                            node = n.id.clone();
                        }
                        me.update(&node, |n| n.connected = true);
                        if r.response_nonce.is_empty() {
                            // A new stream: the sidecar says what it has.
                            if !r.version_info.is_empty() {
                                me.update(&node, |n| n.acked_version = Some(r.version_info.clone()));
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
                                me.update(&node, |n| n.last_nack = Some(nack));
                            }
                            None => me.update(&node, |n| n.acked_version = Some(r.version_info.clone())),
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
            me.update(&node, |n| n.connected = false);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
