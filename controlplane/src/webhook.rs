//! The injector webhook's HTTPS server and its certificate.
//!
//! The API server only calls webhooks over TLS, trusting the `caBundle` of the webhook
//! configuration. Two ways to get there (the chart's `webhook.tls.mode`):
//!
//! - **cert-manager**: a `Certificate` writes the key pair into a Secret mounted here, and
//!   cert-manager's CA injector fills `caBundle`. [`FileCert`] re-reads the files when they
//!   change, so a renewal needs no restart.
//! - **self-signed**: the control plane makes a CA and a serving certificate itself
//!   ([`generate`]), keeps them in a Secret so every replica serves the same one, and writes the
//!   CA into the webhook configuration ([`crate::kube`]).

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA and a serving certificate it signed, PEM.
#[derive(Clone, PartialEq)]
pub struct WebhookCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The private key never reaches a log line, whatever prints the certificate.
impl std::fmt::Debug for WebhookCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCert")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A fresh CA and a serving certificate for `dns_names` (the Service's names), both valid ten
/// years: the self-signed mode is for clusters without cert-manager, where nothing would renew it.
pub fn generate(dns_names: &[String]) -> Result<WebhookCert, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let e = |e: rcgen::Error| format!("cannot generate the webhook certificate: {e}");
    let (from, until) = validity();
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name.push(DnType::CommonName, "spillway injector CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (rcgen::date_time_ymd(from, 1, 1), rcgen::date_time_ymd(until, 1, 1));
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).map_err(e)?;
    let mut leaf = CertificateParams::new(dns_names.to_vec()).map_err(e)?;
    leaf.distinguished_name.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    (leaf.not_before, leaf.not_after) = (rcgen::date_time_ymd(from, 1, 1), rcgen::date_time_ymd(until, 1, 1));
    let leaf_key = KeyPair::generate().map_err(e)?;
    let cert = leaf.signed_by(&leaf_key, &ca).map_err(e)?;
    Ok(WebhookCert { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: leaf_key.serialize_pem() })
}

/// Valid from the start of last year (clocks across a cluster disagree) for ten years.
fn validity() -> (i32, i32) {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let year = 1970 + (secs / 31_556_952) as i32;
    (year - 1, year + 10)
}

/// A certificate chain and key from PEM, ready for rustls.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad private key PEM: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A fixed certificate (the self-signed mode).
#[derive(Debug)]
pub struct StaticCert(pub Arc<CertifiedKey>);

impl ResolvesServerCert for StaticCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Certificate files re-read when they change (checked at most every 10 s), so a cert-manager
/// renewal is picked up without a restart. A half-written renewal keeps the old certificate.
#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<(Instant, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl FileCert {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<FileCert, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let ck = certified_key(&read(&cert)?, &read(&key)?)?;
        let m = modified(&cert);
        Ok(FileCert { cert, key, state: Mutex::new((Instant::now(), m, ck)) })
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0.elapsed() >= Duration::from_secs(10) {
            s.0 = Instant::now();
            let m = modified(&self.cert);
            if m != s.1 {
                let fresh = std::fs::read(&self.cert)
                    .and_then(|c| Ok((c, std::fs::read(&self.key)?)))
                    .map_err(|e| e.to_string())
                    .and_then(|(c, k)| certified_key(&c, &k));
                match fresh {
                    Ok(ck) => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        *s = (Instant::now(), m, ck);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook certificate changed but cannot be loaded; keeping the old one")
                    }
                }
            }
        }
        Some(s.2.clone())
    }
}

pub fn acceptor(resolver: Arc<dyn ResolvesServerCert>) -> TlsAcceptor {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(cfg))
}

/// Serves `router` over TLS, with the webhook's tight timeouts, until the task is dropped.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, router: Router) {
    crate::listen::serve_tls(listener, tls, router, crate::listen::Timeouts::WEBHOOK).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_never_shows_the_private_key() {
        let cert = super::generate(&["spillway-control.spillway.svc".into()]).unwrap();
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        let shown = format!("{cert:?}");
        assert!(!shown.contains("PRIVATE KEY") && shown.contains("<redacted>"), "{shown}");
    }
}
