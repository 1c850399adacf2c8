//! What the control plane's replicas must agree on beyond the config every one of them watches:
//! the feedback demotions, and the leader's checkpoint. The leader makes demotions (it alone sees
//! all the feedback); an editor may undo one through any replica or with kubectl / etcdctl; every
//! replica must serve snapshots with the same ones applied, and a restart must not forget them.
//!
//! # Layout
//!
//! - [`demotions`]: one stored object per demotion — a `SpillwayDemotion` on Kubernetes, a key
//!   under `<prefix>/demotions/` on etcd — created once under its id, undone by a write
//!   conditional on the version read;
//! - [`checkpoint`]: the leader's checkpoint of fleet-wide opens and feedback baselines, one
//!   document (a ConfigMap or an etcd key) that a new leader resumes from.

pub mod checkpoint;
pub mod demotions;

pub use checkpoint::SharedDoc;
pub use demotions::DemotionStore;

use crate::state::ConfigState;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use tokio::time::Duration;

/// Where the replicas keep what they share.
pub struct Shared {
    pub demotions: DemotionStore,
    pub checkpoint: SharedDoc,
}

/// Rounds in a row that may go again at once (lost races); then the next waits, so that a store
/// that keeps refusing cannot make a replica spin.
const AT_ONCE: u32 = 5;

/// Keeps this replica's demotions and the store in step, until dropped: at once when a demotion
/// is made or undone here, and every `every` to take others' changes.
///
/// With `telemetry`, the leader also writes its checkpoint each round, and a follower keeps the
/// latest one to resume from if it takes over.
pub async fn run(shared: Shared, state: Arc<ConfigState>, telemetry: Option<Arc<Telemetry>>, every: Duration) {
    let mut local = state.subscribe_demotions();
    let mut demotions = demotions::Sync::new(shared.demotions);
    let mut raced = 0;
    loop {
        let again = match demotions.round(&state).await {
            Ok(again) => again,
            Err(e) => {
                tracing::warn!(error = %e, store = %demotions.describe(), "cannot share demotions now");
                false
            }
        };
        if let Err(e) = checkpoint::round(&shared.checkpoint, &state, telemetry.as_deref()).await {
            tracing::warn!(error = %e, store = %shared.checkpoint.describe(), "cannot share the leader's checkpoint now");
        }
        raced = if again { raced + 1 } else { 0 };
        if again && raced <= AT_ONCE {
            continue;
        }
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every) => {}
        }
    }
}
