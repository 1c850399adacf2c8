//! TLS for the control plane's gRPC server (rustls with ring, through tonic), with mutual TLS
//! when a client CA is given: then only sidecars holding a certificate it signed get in.

use std::path::Path;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> std::io::Result<ServerTlsConfig> {
    let identity = Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?);
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
    }
    Ok(cfg)
}

/// TLS from certificate and key already in memory (the injector's, with `--tls-from-webhook`).
pub fn from_pem(cert_pem: &str, key_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem))
}
