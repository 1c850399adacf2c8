//! The AWS credential chain, cached and refreshed before expiry, shared by every Bedrock endpoint.
//!
//! Sources, in the AWS SDKs' order: static keys in the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). Web identity (IRSA), container credentials
//! (EKS Pod Identity / ECS) and IMDSv2 plug in behind [`Source`]; see ARCHITECTURE.md for status.

use aws_credential_types::Credentials;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// Refresh this long before a credential expires, so no request is signed with one that
/// expires in flight.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Where credentials come from.
pub enum Source {
    /// Fixed keys (from the environment); never expire.
    Static(Credentials),
}

impl Source {
    /// The first source the environment configures.
    pub fn from_env() -> Result<Source, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                Ok(Source::Static(Credentials::new(id, secret, get("AWS_SESSION_TOKEN"), None, "environment")))
            }
            _ => Err("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()),
        }
    }

    async fn load(&self) -> Result<Credentials, String> {
        match self {
            Source::Static(c) => Ok(c.clone()),
        }
    }
}

/// Credentials shared across requests: loaded once, reused until close to expiry, refreshed by
/// one request while the others wait for the same result.
pub struct AwsCredentials {
    source: Source,
    cached: Mutex<Option<Credentials>>,
}

impl AwsCredentials {
    pub fn new(source: Source) -> Arc<Self> {
        Arc::new(AwsCredentials { source, cached: Mutex::new(None) })
    }

    pub async fn get(&self) -> Result<Credentials, String> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry().is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        {
            return Ok(c.clone());
        }
        let fresh = self.source.load().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCredentials(<redacted>)")
    }
}
