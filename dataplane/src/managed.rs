//! Managed mode: the sidecar takes its routing table from the control plane's
//! `RoutingDiscovery.Stream` instead of a local file.
//!
//! Each pushed snapshot is validated and built like a config file; an applied one is ACKed and
//! written to disk (so a restart with the control plane down starts from it), one that cannot be
//! applied is NACKed with the reason while the current table keeps serving. The stream is
//! re-opened with jittered exponential backoff whenever it breaks; serving never stops.

use crate::metrics::Metrics;
use crate::routing::{Routing, RoutingTable};
use spillway_api::v1::routing_discovery_client::RoutingDiscoveryClient;
use spillway_api::v1::{DiscoveryRequest, ErrorDetail, Node, RoutingSnapshot};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::upstream::secrets::SecretPolicy;

const SOURCE: &str = "<control-plane>";

/// Builds and swaps in a pushed snapshot; the error says why it cannot be applied.
pub fn apply(routing: &Routing, s: &RoutingSnapshot, secrets: &SecretPolicy) -> Result<(), String> {
    let text = std::str::from_utf8(&s.config_json).map_err(|_| "snapshot config is not UTF-8".to_string())?;
    let current = routing.load();
    let config = spillway_api::config::load_str(text, SOURCE).map_err(|e| e.to_string())?;
    let table =
        RoutingTable::build(&config, s.version.clone(), SOURCE, Some(&current), secrets).map_err(|e| e.to_string())?;
    routing.swap(table);
    Ok(())
}

/// Writes the snapshot atomically (temp file, then rename) so a crash never leaves half a file.
pub fn persist(path: &Path, s: &RoutingSnapshot) -> std::io::Result<()> {
    let doc = serde_json::json!({"version": s.version, "config": String::from_utf8_lossy(&s.config_json)});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(tmp, path)
}

/// The last accepted snapshot, if one was saved.
pub fn load_persisted(path: &Path) -> Option<RoutingSnapshot> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(RoutingSnapshot {
        version: v.get("version")?.as_str()?.to_owned(),
        config_json: v.get("config")?.as_str()?.as_bytes().to_vec(),
    })
}

pub struct Managed {
    pub url: String,
    pub node: Node,
    pub snapshot_file: Option<PathBuf>,
    pub tls: Option<ClientTls>,
    /// Sent as `authorization: Bearer …` on both streams; read anew for each connection.
    pub token_file: Option<PathBuf>,
    /// Which credentials a pushed snapshot may name.
    pub secrets: SecretPolicy,
}

impl Managed {
    /// A stream request carrying this sidecar's identity token, if it has one.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let mut req = tonic::Request::new(message);
        if let Some(f) = &self.token_file {
            // The token is never logged: errors name the file only.
            let token = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the identity token {}: {e}", f.display()))?;
            let value = format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| format!("the identity token in {} is not a valid header value", f.display()))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// TLS to the control plane: the CA that signs its certificate and, for mutual TLS, this
/// sidecar's own certificate and key (PEM).
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls(mutual: {})", self.identity.is_some())
    }
}

impl ClientTls {
    /// Reads the PEM files named on the command line.
    pub fn from_files(ca: &Path, cert_key: Option<(&Path, &Path)>) -> std::io::Result<Self> {
        ClientTls::with_ca(std::fs::read(ca)?, cert_key)
    }

    /// The CA given as PEM text (the injector passes it in the environment), the client
    /// certificate and key, if any, from files.
    pub fn with_ca(ca_pem: Vec<u8>, cert_key: Option<(&Path, &Path)>) -> std::io::Result<Self> {
        let identity = match cert_key {
            Some((c, k)) => Some((std::fs::read(c)?, std::fs::read(k)?)),
            None => None,
        };
        Ok(ClientTls { ca_pem, identity })
    }
}

/// A channel to the control plane, TLS as configured; discovery and telemetry share its settings.
pub async fn channel(m: &Managed) -> Result<Channel, String> {
    channel_to(m, &m.url).await
}

/// A channel to `url` — the configured control plane, or the leader a replica named — with the
/// server verified as the configured control plane either way: every replica serves the same
/// certificate, issued for the Service's name, not for its pod's address.
pub async fn channel_to(m: &Managed, url: &str) -> Result<Channel, String> {
    let mut endpoint =
        Channel::from_shared(url.to_owned()).map_err(|e| e.to_string())?.connect_timeout(Duration::from_secs(5));
    if let Some(tls) = &m.tls {
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some(host) = m.url.parse::<tonic::codegen::http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)) {
            cfg = cfg.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        }
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(cfg).map_err(|e| e.to_string())?;
    }
    endpoint.connect().await.map_err(|e| format!("{e}: {}", source_of(&e)))
}

fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

/// Runs the discovery client forever.
pub async fn run(m: Arc<Managed>, routing: Arc<Routing>, metrics: Arc<Metrics>) {
    reconnecting("discovery", &m.url, || session(&m, &routing, &metrics)).await
}

/// Why a control-plane stream ended.
#[derive(Debug)]
pub enum StreamError {
    /// Connection, protocol or server failure: reconnect with backoff.
    Failed(String),
    /// A replica that does not lead refused it: reconnect soon — to the leader it named, if any,
    /// else through the Service again.
    NotLeader { message: String, leader: Option<String> },
}

impl Managed {
    /// The leader a refusal named, if the sidecar may follow it there: the same scheme as the
    /// configured URL, so that a redirect can never turn TLS off.
    pub fn follow(&self, named: &str) -> Option<String> {
        let scheme = |u: &str| u.parse::<tonic::codegen::http::Uri>().ok()?.scheme_str().map(str::to_owned);
        let ok = scheme(named).is_some_and(|s| Some(s) == scheme(&self.url));
        if !ok {
            tracing::warn!(leader = %named, control_plane = %self.url, "not following a leader address of another scheme");
        }
        ok.then(|| named.to_owned())
    }
}

impl From<String> for StreamError {
    fn from(e: String) -> Self {
        StreamError::Failed(e)
    }
}

impl From<tonic::Status> for StreamError {
    fn from(s: tonic::Status) -> Self {
        if s.metadata().get(spillway_api::NOT_LEADER).is_some() {
            let leader = s.metadata().get(spillway_api::LEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            StreamError::NotLeader { message: s.message().to_owned(), leader }
        } else {
            StreamError::Failed(s.to_string())
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A stream that stayed up this long was healthy: a break after it starts the backoff afresh.
const HEALTHY: Duration = Duration::from_secs(10);

/// Runs `session` again whenever it ends, after a jittered exponential backoff.
pub async fn reconnecting<F, Fut>(what: &str, url: &str, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StreamError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let result = session().await;
        if started.elapsed() >= HEALTHY {
            backoff = FIRST_BACKOFF;
        }
        let wait = match result {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                backoff
            }
            // Not an outage: the next connection goes to the leader named, or may land on it. A
            // short jittered pause only, so that a fleet does not spin against a control plane
            // without a leader.
            Err(StreamError::NotLeader { message, leader }) => {
                tracing::debug!(control_plane = %url, stream = what, reason = %message, leader = leader.as_deref().unwrap_or("unknown"), "replica does not lead; reconnecting");
                FIRST_BACKOFF
            }
            Err(StreamError::Failed(e)) => {
                tracing::warn!(control_plane = %url, stream = what, error = %e, "control-plane stream down; serving on");
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                b
            }
        };
        // Full jitter keeps a fleet from reconnecting in lockstep after a control-plane restart.
        tokio::time::sleep(wait.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
    }
}

async fn session(m: &Managed, routing: &Routing, metrics: &Metrics) -> Result<(), StreamError> {
    let mut client = RoutingDiscoveryClient::new(channel(m).await?);
    let (tx, rx) = mpsc::channel(4);
    let version = routing.load().version.clone();
    let hello = DiscoveryRequest { node: Some(m.node.clone()), version_info: version, ..Default::default() };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let mut responses =
        client.stream(m.request(ReceiverStream::new(rx))?).await.map_err(|e| e.to_string())?.into_inner();
    while let Some(resp) = responses.message().await.map_err(|e| e.to_string())? {
        let Some(snapshot) = resp.snapshot else { continue };
        let reply = match apply(routing, &snapshot, &m.secrets) {
            Ok(()) => {
                metrics.config_reload("ok");
                tracing::info!(version = %snapshot.version, "snapshot applied");
                if let Some(path) = &m.snapshot_file
                    && let Err(e) = persist(path, &snapshot)
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save the snapshot");
                }
                DiscoveryRequest {
                    version_info: snapshot.version.clone(),
                    response_nonce: resp.nonce,
                    ..Default::default()
                }
            }
            Err(e) => {
                metrics.config_reload("error");
                routing.reject(e.clone());
                tracing::error!(version = %snapshot.version, error = %e, "snapshot rejected; keeping the current table");
                DiscoveryRequest {
                    version_info: routing.load().version.clone(),
                    response_nonce: resp.nonce,
                    error_detail: Some(ErrorDetail { code: 3, message: e }),
                    ..Default::default()
                }
            }
        };
        tx.send(reply).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(url: &str) -> Managed {
        Managed {
            url: url.into(),
            node: Node::default(),
            snapshot_file: None,
            tls: None,
            token_file: None,
            secrets: SecretPolicy::default(),
        }
    }

    #[test]
    fn a_named_leader_is_followed_only_with_the_configured_scheme() {
        let m = managed("https://spillway-control.spillway.svc:7000");
        assert_eq!(m.follow("https://10.0.3.7:7000").as_deref(), Some("https://10.0.3.7:7000"));
        assert_eq!(m.follow("http://10.0.3.7:7000"), None, "a redirect never turns TLS off");
        assert_eq!(m.follow("not a url"), None);
        assert_eq!(
            managed("http://127.0.0.1:7000").follow("http://127.0.0.1:7100").as_deref(),
            Some("http://127.0.0.1:7100")
        );
    }

    #[test]
    fn a_refusal_names_the_leader_it_knows() {
        let mut meta = tonic::metadata::MetadataMap::new();
        meta.insert(spillway_api::NOT_LEADER, "1".parse().unwrap());
        meta.insert(spillway_api::LEADER, "https://10.0.3.7:7000".parse().unwrap());
        let refused = tonic::Status::with_metadata(tonic::Code::Unavailable, "does not lead", meta);
        match StreamError::from(refused) {
            StreamError::NotLeader { leader, .. } => assert_eq!(leader.as_deref(), Some("https://10.0.3.7:7000")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(StreamError::from(tonic::Status::unavailable("down")), StreamError::Failed(_)));
    }
}
