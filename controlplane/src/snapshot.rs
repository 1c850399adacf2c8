//! Immutable, consistency-checked routing snapshots, versioned by content.
//!
//! A snapshot is only ever built from a config that passed validation, and is checked once more
//! by parsing its own JSON back: what is pushed is exactly what a sidecar will load.

use spillway_api::config::{ConfigErrors, RoutingConfig, load_str, version_of};
use spillway_api::v1::RoutingSnapshot;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: String,
    pub config_json: Vec<u8>,
}

impl Snapshot {
    pub fn build(config: &RoutingConfig) -> Result<Arc<Snapshot>, ConfigErrors> {
        let json = serde_json::to_vec(config)
            .map_err(|e| ConfigErrors::single("<snapshot>", "", format!("cannot serialise the config: {e}")))?;
        let text = String::from_utf8_lossy(&json);
        let back = load_str(&text, "<snapshot>")?;
        if back != *config {
            return Err(ConfigErrors::single("<snapshot>", "", "the config does not survive serialisation unchanged"));
        }
        Ok(Arc::new(Snapshot { version: version_of(&json), config_json: json }))
    }

    pub fn to_proto(&self) -> RoutingSnapshot {
        RoutingSnapshot { version: self.version.clone(), config_json: self.config_json.clone() }
    }
}
