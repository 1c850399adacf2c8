//! Reloads the routing table when its config file changes.
//!
//! The file's *directory* is watched, not the file: editors save by writing a temp file and
//! renaming it over the original, and Kubernetes updates a mounted ConfigMap by re-pointing the
//! `..data` symlink, and in both cases a watch on the old inode would never fire again. Every
//! event in the directory triggers a re-read; a content hash makes the unrelated ones free.

use super::{Routing, RoutingTable};
use crate::metrics::Metrics;
use notify::{RecursiveMode, Watcher};
use spillway_api::config::version_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the OS watch alive; dropping it stops reloading.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Editors and kubelet touch several files in a burst; one reload after the burst is enough.
const SETTLE: Duration = Duration::from_millis(50);

pub fn watch(path: PathBuf, routing: Arc<Routing>, metrics: Arc<Metrics>) -> notify::Result<ConfigWatch> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| spillway_api::config::watch::may_change_content(&e.kind)) {
            let _ = tx.send(());
        }
    })?;
    for dir in dirs_to_watch(&path) {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload(&path, &routing, &metrics);
        }
    });
    Ok(ConfigWatch { _watcher: watcher, task })
}

/// The directory holding the path, and the one holding what it resolves to when that is
/// elsewhere (a config symlinked in from another directory).
fn dirs_to_watch(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf);
    let mut dirs: Vec<PathBuf> = parent(path).into_iter().collect();
    if dirs.is_empty() {
        dirs.push(PathBuf::from("."));
    }
    if let Some(real) = std::fs::canonicalize(path).ok().as_deref().and_then(parent) {
        let first = std::fs::canonicalize(&dirs[0]).unwrap_or_else(|_| dirs[0].clone());
        if !real.starts_with(&first) {
            dirs.push(real);
        }
    }
    dirs
}

/// Re-reads the file and swaps in a new table if it changed and is valid.
pub fn reload(path: &Path, routing: &Routing, metrics: &Metrics) {
    let source = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            // Mid-swap (the rename has not landed yet) or deleted: keep serving what we have.
            tracing::warn!(file = %source, error = %e, "config file unreadable; keeping the current routing table");
            metrics.config_reload("error");
            routing.reject(format!("{source}: cannot read the file: {e}"));
            return;
        }
    };
    let current = routing.load();
    let version = version_of(text.as_bytes());
    if version == current.version {
        return;
    }
    let built = spillway_api::config::load_str(&text, &source)
        .and_then(|config| RoutingTable::build(&config, version.clone(), &source, Some(&current), &Default::default()));
    match built {
        Ok(table) => {
            routing.swap(table);
            metrics.config_reload("ok");
            tracing::info!(file = %source, version = %version, previous = %current.version, "routing config reloaded");
        }
        Err(errors) => {
            metrics.config_reload("error");
            tracing::error!(file = %source, version = %current.version, "{errors}; keeping the current routing table");
            routing.reject(errors.to_string());
        }
    }
}
