//! API keys from the environment or a file. Values are marked sensitive so they never appear in
//! logs or debug output; a key file is re-read periodically so a rotated Kubernetes Secret is
//! picked up without a restart.

use http::HeaderValue;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

const FILE_REFRESH: Duration = Duration::from_secs(30);

pub enum Credential {
    None,
    /// A bearer header value built once (environment variables do not change under a process).
    Static(HeaderValue),
    File {
        path: PathBuf,
        cached: Mutex<(Instant, HeaderValue)>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("Credential::None"),
            Credential::Static(_) => f.write_str("Credential::Static(<redacted>)"),
            Credential::File { path, .. } => write!(f, "Credential::File({})", path.display()),
        }
    }
}

fn bearer(key: &str) -> Result<HeaderValue, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("the API key is empty".into());
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| "the API key contains characters not allowed in an HTTP header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

impl Credential {
    pub fn from_env(var: &str) -> Result<Self, String> {
        let key = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
        Ok(Credential::Static(bearer(&key).map_err(|e| format!("{e} (from {var})"))?))
    }

    pub fn from_file(path: PathBuf) -> Result<Self, String> {
        let value = read_key_file(&path)?;
        Ok(Credential::File { path, cached: Mutex::new((Instant::now(), value)) })
    }

    /// The `Authorization` value to send, if any. A key file that became unreadable keeps the last
    /// good key: failing every request because a Secret is mid-rotation would be worse.
    pub fn authorization(&self) -> Option<HeaderValue> {
        match self {
            Credential::None => None,
            Credential::Static(v) => Some(v.clone()),
            Credential::File { path, cached } => {
                let mut guard = cached.lock().unwrap_or_else(|p| p.into_inner());
                if guard.0.elapsed() >= FILE_REFRESH {
                    guard.0 = Instant::now();
                    match read_key_file(path) {
                        Ok(v) => guard.1 = v,
                        Err(e) => tracing::warn!(path = %path.display(), error = %e, "keeping the last API key"),
                    }
                }
                Some(guard.1.clone())
            }
        }
    }
}

fn read_key_file(path: &PathBuf) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    bearer(&text).map_err(|e| format!("{e} (in {})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let c = Credential::Static(bearer("sk-secret-123").unwrap());
        assert!(!format!("{c:?}").contains("sk-secret"));
        assert!(c.authorization().unwrap().is_sensitive());
    }

    #[tokio::test(start_paused = true)]
    async fn key_file_rotation_is_picked_up_after_the_refresh_interval() {
        let dir = std::env::temp_dir().join(format!("spillway-key-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "old-key\n").unwrap();
        let c = Credential::from_file(path.clone()).unwrap();
        std::fs::write(&path, "new-key").unwrap();
        assert_eq!(c.authorization().unwrap(), "Bearer old-key");
        tokio::time::advance(FILE_REFRESH).await;
        assert_eq!(c.authorization().unwrap(), "Bearer new-key");
        std::fs::remove_file(&path).unwrap();
        tokio::time::advance(FILE_REFRESH).await;
        assert_eq!(c.authorization().unwrap(), "Bearer new-key", "a vanished file keeps the last key");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
