//! The config source: a directory of YAML files (a mounted ConfigMap, a checkout), merged into
//! one routing config, validated, and published as a snapshot whenever it changes.
//!
//! Each file contributes entries to `endpoints`, `pools`, `features` and `breakers`; a name
//! defined in two files is an error naming both. Problems are reported with the file that
//! defines the entry at fault. An invalid directory is never published: the last good snapshot
//! stays. The directory is watched (notify), so editor saves and ConfigMap `..data` swaps both
//! trigger a reload. Publishing goes through [`ConfigState`], so directory changes appear in the
//! change history and keep the active feedback demotions.

use crate::state::ConfigState;
use notify::{RecursiveMode, Watcher};
use spillway_api::config::{ConfigError, ConfigErrors, RoutingConfig, load_str};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Reads and merges every `*.yaml` / `*.yml` file of `dir` (hidden ones, like ConfigMap's
/// `..data` internals, skipped), then validates the whole.
pub fn load_dir(dir: &Path) -> Result<RoutingConfig, ConfigErrors> {
    let shown = dir.display().to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConfigErrors::single(&shown, "", format!("cannot read the directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigErrors::single(&shown, "", "no *.yaml files"));
    }
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::single(&file, "", format!("cannot read the file: {e}")))?;
        // Each file must parse on its own; semantic checks wait for the merged whole.
        match serde_saphyr_parse(&text, &file) {
            Ok(c) => parts.push((file, c)),
            Err(e) => problems.extend(e.0),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    merge(parts, &shown)
}

/// Merges named parts (files, custom resources) into one config and validates the whole; each
/// problem names the part that defines the entry at fault, and a name defined in two parts is
/// an error naming both.
pub fn merge(parts: Vec<(String, RoutingConfig)>, shown: &str) -> Result<RoutingConfig, ConfigErrors> {
    let mut merged = RoutingConfig::default();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, part) in parts {
        let mut claim = |section: &str, name: &String| {
            let key = format!("{section}.{name}");
            if let Some(first) = owner.get(&key) {
                problems.push(ConfigError {
                    file: file.clone(),
                    path: key,
                    message: format!("is also defined in {first}"),
                });
            } else {
                owner.insert(key, file.clone());
            }
        };
        for n in part.endpoints.keys() {
            claim("endpoints", n);
        }
        for n in part.pools.keys() {
            claim("pools", n);
        }
        for n in part.features.keys() {
            claim("features", n);
        }
        for n in part.breakers.keys() {
            claim("breakers", n);
        }
        merged.endpoints.extend(part.endpoints);
        merged.pools.extend(part.pools);
        merged.features.extend(part.features);
        merged.breakers.extend(part.breakers);
        if part.retry_budget != spillway_api::config::RetryBudget::default() {
            if owner.contains_key("retry_budget") {
                problems.push(ConfigError {
                    file: file.clone(),
                    path: "retry_budget".into(),
                    message: format!("is also defined in {}", owner["retry_budget"]),
                });
            }
            owner.insert("retry_budget".into(), file.clone());
            merged.retry_budget = part.retry_budget;
        }
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    // Validate the whole, then attribute each problem to the part defining its entry.
    let text = serde_json::to_string(&merged).unwrap_or_default();
    load_str(&text, shown).map_err(|ConfigErrors(list)| {
        ConfigErrors(
            list.into_iter()
                .map(|mut e| {
                    let entry: String = e.path.splitn(3, ['.', '[']).take(2).collect::<Vec<_>>().join(".");
                    if let Some(f) = owner.get(&entry) {
                        e.file = f.clone();
                    }
                    e
                })
                .collect(),
        )
    })
}

/// Parses one file without the cross-reference checks (another file may define what it names).
fn serde_saphyr_parse(text: &str, file: &str) -> Result<RoutingConfig, ConfigErrors> {
    spillway_api::config::parse_str(text, file)
}

/// Loads `dir`, publishes it, and republishes on every valid change until dropped.
pub struct DirSource {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirSource {
    pub fn start(dir: PathBuf, state: Arc<ConfigState>) -> Result<DirSource, String> {
        let who = format!("directory:{}", dir.display());
        let config = load_dir(&dir).map_err(|e| e.to_string())?;
        state.set_base(config, &who, "directory").map_err(|e| e.to_string())?;
        state.set_owner(crate::state::Owner::Directory(dir.clone()));
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| spillway_api::config::watch::may_change_content(&e.kind)) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| e.to_string())?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a burst of file events (a ConfigMap swap touches several) settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                match load_dir(&dir).and_then(|c| state.set_base(c, &who, "directory")) {
                    Ok(Some(c)) => tracing::info!(version = %c.version, "routing config directory changed; published"),
                    Ok(None) => tracing::debug!("routing config directory touched; nothing changed"),
                    Err(e) => tracing::error!("{e}; the last good snapshot stays published"),
                }
            }
        });
        Ok(DirSource { _watcher: watcher, task })
    }
}
