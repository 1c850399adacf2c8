//! Upstream providers: the pooled HTTP client, credentials, and what a failed attempt means.
//!
//! Each endpoint owns its client (and so its connection pool and connect timeout). Endpoints
//! whose config does not change across a reload keep theirs, so a reload never drops warm
//! connections.

pub mod aws;
pub mod credentials;
pub mod failure;
pub mod gcp;
pub mod provider;
pub mod secrets;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One TLS configuration (ring, the webpki roots) for every endpoint: parsing the root set per
/// endpoint cost tens of KiB each. Cloning it shares the roots.
fn tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    })
}

/// A pooled HTTP/1.1 + HTTP/2 client with TLS from rustls (ring) and the webpki root set.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config().clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(https)
}
