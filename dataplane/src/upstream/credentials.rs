//! API keys from the environment or a file, sent the way the provider wants them
//! (`Authorization: Bearer`, `x-api-key`, `api-key`). Values are marked sensitive so they never
//! appear in logs or debug output; a key file is re-read periodically so a rotated Kubernetes
//! Secret is picked up without a restart.

use http::{HeaderName, HeaderValue, header};
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

const FILE_REFRESH: Duration = Duration::from_secs(30);

/// How a provider expects its key.
#[derive(Debug, Clone)]
pub enum Scheme {
    /// `Authorization: Bearer <key>` (OpenAI, OpenAI-compatible servers, Azure with Entra tokens).
    Bearer,
    /// The raw key in a header of its own (`x-api-key` for Anthropic, `api-key` for Azure).
    Header(HeaderName),
}

enum Source {
    None,
    /// Built once: environment variables do not change under a process.
    Static(HeaderValue),
    File {
        path: PathBuf,
        cached: Mutex<(Instant, HeaderValue)>,
    },
}

pub struct Credential {
    scheme: Scheme,
    source: Source,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::None => f.write_str("Credential::None"),
            Source::Static(_) => write!(f, "Credential::Static({:?}, <redacted>)", self.scheme),
            Source::File { path, .. } => write!(f, "Credential::File({:?}, {})", self.scheme, path.display()),
        }
    }
}

impl Credential {
    pub fn none() -> Self {
        Credential { scheme: Scheme::Bearer, source: Source::None }
    }

    pub fn from_env(var: &str, scheme: Scheme) -> Result<Self, String> {
        let key = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
        let value = value(&scheme, &key).map_err(|e| format!("{e} (from {var})"))?;
        Ok(Credential { scheme, source: Source::Static(value) })
    }

    pub fn from_file(path: PathBuf, scheme: Scheme) -> Result<Self, String> {
        let value = read_key_file(&scheme, &path)?;
        Ok(Credential { scheme, source: Source::File { path, cached: Mutex::new((Instant::now(), value)) } })
    }

    /// The header to send, if any. A key file that became unreadable keeps the last good key:
    /// failing every request because a Secret is mid-rotation would be worse.
    pub fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        let name = match &self.scheme {
            Scheme::Bearer => header::AUTHORIZATION,
            Scheme::Header(h) => h.clone(),
        };
        let value = match &self.source {
            Source::None => return None,
            Source::Static(v) => v.clone(),
            Source::File { path, cached } => {
                let mut guard = cached.lock().unwrap_or_else(|p| p.into_inner());
                if guard.0.elapsed() >= FILE_REFRESH {
                    guard.0 = Instant::now();
                    match read_key_file(&self.scheme, path) {
                        Ok(v) => guard.1 = v,
                        Err(e) => tracing::warn!(path = %path.display(), error = %e, "keeping the last API key"),
                    }
                }
                guard.1.clone()
            }
        };
        Some((name, value))
    }
}

fn value(scheme: &Scheme, key: &str) -> Result<HeaderValue, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("the API key is empty".into());
    }
    let text = match scheme {
        Scheme::Bearer => format!("Bearer {key}"),
        Scheme::Header(_) => key.to_owned(),
    };
    let mut v = HeaderValue::from_str(&text)
        .map_err(|_| "the API key contains characters not allowed in an HTTP header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

fn read_key_file(scheme: &Scheme, path: &PathBuf) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    value(scheme, &text).map_err(|e| format!("{e} (in {})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        // PATH stands in for a key: every process has one, so the test changes no environment.
        let key = std::env::var("PATH").unwrap();
        let c = Credential::from_env("PATH", Scheme::Header(HeaderName::from_static("x-api-key"))).unwrap();
        assert!(!format!("{c:?}").contains(&key), "{c:?}");
        let (name, value) = c.header().unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-api-key", key.as_str()));
        assert!(value.is_sensitive());
    }

    #[tokio::test(start_paused = true)]
    async fn key_file_rotation_is_picked_up_after_the_refresh_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "old-key\n").unwrap();
        let c = Credential::from_file(path.clone(), Scheme::Bearer).unwrap();
        std::fs::write(&path, "new-key").unwrap();
        assert_eq!(c.header().unwrap().1, "Bearer old-key");
        tokio::time::advance(FILE_REFRESH).await;
        assert_eq!(c.header().unwrap().1, "Bearer new-key");
        std::fs::remove_file(&path).unwrap();
        tokio::time::advance(FILE_REFRESH).await;
        assert_eq!(c.header().unwrap().1, "Bearer new-key", "a vanished file keeps the last key");
    }
}
