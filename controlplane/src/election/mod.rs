//! One leader among the control plane's replicas, for the work that must be done once for the
//! whole fleet: dividing PT pools into leases, fleet-wide breaker verdicts, feedback windows.
//! Every replica serves snapshots; only the leader takes telemetry.
//!
//! A `coordination.k8s.io/v1` Lease, as client-go's leader election uses it: read it; renew it if
//! it is ours; take it over if its holder has not renewed it for its duration; every write is a
//! replace conditional on the `resourceVersion` read, so two replicas can never both win. Expiry
//! is judged on this replica's own clock, from when it last saw the record change, so clocks of
//! different nodes need not agree. A leader that cannot renew within `renew_deadline` steps down
//! before anyone else may take over (`renew_deadline` < `duration`).
//!
//! The leader's **epoch**, kept in the Lease (annotation `spillway.dev/epoch`), is set at every
//! acquisition by a new process — even by the same pod after a restart — to the later of the
//! wall clock in milliseconds and the previous epoch plus one. Lease grants stamped with it thus
//! order after every grant of an earlier leader (see `leases`), and after those of a control
//! plane that ran without election (whose epoch is its start time), or of a Lease deleted and
//! made anew.

pub mod lease;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
pub use lease::LeaseRecord;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a holder that stops renewing keeps the lease.
    pub duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often everyone looks.
    pub retry: Duration,
    /// Where this replica answers, told to the others while it leads.
    pub advertise: Advertised,
}

/// Where a replica can be reached by the others and by sidecars.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// Its admin API: followers forward the calls only the leader can answer there.
    pub admin: String,
    /// Its gRPC server: a follower that refuses a sidecar's telemetry stream names it, so the
    /// sidecar reconnects straight to the leader instead of trying replicas at random.
    pub grpc: String,
}

impl Advertised {
    /// `None` when nothing is advertised at all.
    fn known(self) -> Option<Advertised> {
        (!self.admin.is_empty() || !self.grpc.is_empty()).then_some(self)
    }
}

impl ElectionConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        ElectionConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
            advertise: Advertised::default(),
        }
    }
}

/// `Some(epoch)` while this replica leads.
pub type Leadership = watch::Receiver<Option<u64>>;

/// A running campaign.
pub struct Election {
    pub leading: Leadership,
    /// Where the current leader answers, as its Lease says.
    pub leader: watch::Receiver<Option<Advertised>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Campaigns until the task is dropped.
pub fn run(client: kube::Client, config: ElectionConfig) -> Election {
    let (tx, rx) = watch::channel(None);
    let (url_tx, url_rx) = watch::channel(None);
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let task = tokio::spawn(async move {
        let mut elector = Elector { config, observed: None, renewed_at: None, epoch: None };
        loop {
            let now = Instant::now();
            let leading = elector.round(&api, now).await;
            let url = match leading {
                Some(_) => Some(elector.config.advertise.clone()),
                None => elector.observed.as_ref().map(|(r, _)| r.leader.clone()),
            };
            url_tx.send_if_modified(|cur| {
                let url = url.and_then(Advertised::known);
                let changed = *cur != url;
                *cur = url;
                changed
            });
            tx.send_if_modified(|cur| {
                if *cur == leading {
                    return false;
                }
                match leading {
                    Some(epoch) => tracing::info!(epoch, "leading the control plane"),
                    None => tracing::warn!("no longer leading the control plane"),
                }
                *cur = leading;
                true
            });
            tokio::time::sleep(elector.config.retry).await;
        }
    });
    Election { leading: rx, leader: url_rx, task }
}

struct Elector {
    config: ElectionConfig,
    /// The record last read, and when it was first seen in that state.
    observed: Option<(LeaseRecord, Instant)>,
    /// When this replica last renewed, while it leads.
    renewed_at: Option<Instant>,
    epoch: Option<u64>,
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

impl Elector {
    /// One look at the Lease; returns the epoch if this replica leads after it.
    async fn round(&mut self, api: &Api<Lease>, now: Instant) -> Option<u64> {
        let c = &self.config;
        let record = match lease::get(api, &c.name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader lease");
                return self.keep_or_step_down(now);
            }
        };
        let Some(record) = record else {
            // Nobody has ever led: create it, holding it.
            let lease = LeaseRecord {
                holder: c.identity.clone(),
                duration_s: c.duration.as_secs(),
                renew_time: rfc3339_now(),
                transitions: 1,
                epoch: crate::ads::now_ms(),
                resource_version: String::new(),
                leader: c.advertise.clone(),
            };
            return self.write(api, &lease, now).await;
        };
        if self.observed.as_ref().is_none_or(|(o, _)| o.resource_version != record.resource_version) {
            self.observed = Some((record.clone(), now));
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let ours = record.holder == c.identity;
        if ours && self.epoch.is_some() {
            // Renew.
            let lease = LeaseRecord { renew_time: rfc3339_now(), leader: c.advertise.clone(), ..record };
            return self.write(api, &lease, now).await;
        }
        let expired = now.saturating_duration_since(seen_at) >= Duration::from_secs(record.duration_s.max(1));
        if ours || expired || record.holder.is_empty() {
            // Take it over (or take it back after a restart): a new epoch either way.
            let lease = LeaseRecord {
                holder: c.identity.clone(),
                duration_s: c.duration.as_secs(),
                renew_time: rfc3339_now(),
                transitions: record.transitions + 1,
                epoch: crate::ads::now_ms().max(record.epoch + 1),
                resource_version: record.resource_version,
                leader: c.advertise.clone(),
            };
            return self.write(api, &lease, now).await;
        }
        self.follow()
    }

    async fn write(&mut self, api: &Api<Lease>, lease: &LeaseRecord, now: Instant) -> Option<u64> {
        let c = &self.config;
        match lease::write(api, &c.name, lease).await {
            Ok(true) => {
                self.renewed_at = Some(now);
                self.epoch = Some(lease.epoch);
                self.epoch
            }
            // Someone wrote first: it may lead now. Follow until the next look says otherwise.
            Ok(false) => self.follow(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the leader lease");
                self.keep_or_step_down(now)
            }
        }
    }

    /// After a failed look or write: a leader stays one until its renew deadline passes.
    fn keep_or_step_down(&mut self, now: Instant) -> Option<u64> {
        match self.renewed_at {
            Some(at) if self.epoch.is_some() && now.saturating_duration_since(at) < self.config.renew_deadline => {
                self.epoch
            }
            _ => self.follow(),
        }
    }

    fn follow(&mut self) -> Option<u64> {
        self.epoch = None;
        self.renewed_at = None;
        None
    }
}
