//! Google OAuth access tokens for Vertex AI, cached and refreshed before expiry, shared by every
//! Vertex endpoint.
//!
//! Source: the GCE / GKE metadata server (Workload Identity on GKE), at `GCE_METADATA_HOST`
//! (as the Google auth libraries read it) or `metadata.google.internal`. Service-account keys
//! and workload identity federation plug in behind [`Source`]; see ARCHITECTURE.md for status.

use super::{HttpClient, http_client};
use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant, timeout};

/// Refresh this long before a token expires, so no request carries one that expires in flight.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Source {
    Metadata { url: Uri },
}

impl Source {
    pub fn from_env() -> Result<Source, String> {
        let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
        let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
        Ok(Source::Metadata { url: url.parse().map_err(|e| format!("bad GCE_METADATA_HOST `{host}`: {e}"))? })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub struct GcpToken {
    source: Source,
    client: HttpClient,
    cached: Mutex<Option<(HeaderValue, Instant)>>,
}

impl std::fmt::Debug for GcpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GcpToken(<redacted>)")
    }
}

impl GcpToken {
    pub fn new(source: Source) -> Arc<Self> {
        Arc::new(GcpToken { source, client: http_client(Duration::from_secs(2)), cached: Mutex::new(None) })
    }

    /// `Bearer <token>`, fetched once and reused until close to expiry; concurrent callers wait
    /// for the one fetch.
    pub async fn authorization(&self) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().await;
        if let Some((v, expires)) = cached.as_ref()
            && Instant::now() + REFRESH_BEFORE_EXPIRY < *expires
        {
            return Ok(v.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let mut v =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "token is not a valid header value")?;
        v.set_sensitive(true);
        *cached = Some((v.clone(), Instant::now() + lifetime));
        Ok(v)
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let Source::Metadata { url } = &self.source;
        let req = Request::get(url.clone())
            .header("metadata-flavor", "Google")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = timeout(FETCH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("metadata server at {url} did not answer within {FETCH_TIMEOUT:?}"))?
            .map_err(|e| format!("metadata server at {url}: {e}"))?;
        let status = resp.status();
        let body = timeout(FETCH_TIMEOUT, Limited::new(resp.into_body(), 64 * 1024).collect())
            .await
            .map_err(|_| "metadata server stalled".to_string())?
            .map_err(|e| format!("metadata server body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("metadata server answered {status}"));
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| format!("metadata token response: {e}"))?;
        Ok((t.access_token, Duration::from_secs(t.expires_in.unwrap_or(3600))))
    }
}
