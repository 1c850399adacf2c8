//! The leader Lease through kube-rs: read it, and create or replace it conditionally on the
//! `resourceVersion` read (409 → someone else wrote first).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};

/// The holder's epoch: it stamps lease grants.
const EPOCH: &str = "spillway.dev/epoch";
/// Where the holder's admin API answers.
const ADMIN_URL: &str = "spillway.dev/admin-url";
/// Where the holder's gRPC server answers.
const GRPC_URL: &str = "spillway.dev/grpc-url";

/// What the elector reads and writes of a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub duration_s: u64,
    /// RFC 3339 with microseconds, as the API server writes `renewTime`.
    pub renew_time: String,
    /// Bumped on every change of holder.
    pub transitions: u64,
    /// The holder's epoch (annotation `spillway.dev/epoch`).
    pub epoch: u64,
    /// For the conditional replace; empty for a create.
    pub resource_version: String,
    /// Where the holder answers (annotations `spillway.dev/admin-url`, `spillway.dev/grpc-url`):
    /// followers send the leader's views and sidecars' telemetry there.
    pub leader: super::Advertised,
}

fn micro_time(rfc3339: &str) -> Option<MicroTime> {
    serde_json::from_value(serde_json::Value::String(rfc3339.to_owned())).ok()
}

fn rfc3339(t: &MicroTime) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The Lease `name`, or `None` if it does not exist.
pub async fn get(api: &Api<Lease>, name: &str) -> Result<Option<LeaseRecord>, String> {
    let Some(lease) = api.get_opt(name).await.map_err(|e| format!("reading lease {name}: {e}"))? else {
        return Ok(None);
    };
    let spec = lease.spec.unwrap_or_default();
    let annotation = |k: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned().unwrap_or_default();
    Ok(Some(LeaseRecord {
        holder: spec.holder_identity.unwrap_or_default(),
        duration_s: spec.lease_duration_seconds.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
        renew_time: spec.renew_time.as_ref().map(rfc3339).unwrap_or_default(),
        transitions: spec.lease_transitions.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
        epoch: annotation(EPOCH).parse().unwrap_or(0),
        resource_version: lease.metadata.resource_version.unwrap_or_default(),
        leader: super::Advertised { admin: annotation(ADMIN_URL), grpc: annotation(GRPC_URL) },
    }))
}

/// Creates the Lease (`resource_version` empty) or replaces it only if it is still at
/// `resource_version`. `Ok(false)`: someone else wrote first — re-read and decide again.
pub async fn write(api: &Api<Lease>, name: &str, record: &LeaseRecord) -> Result<bool, String> {
    let mut lease = Lease {
        spec: Some(LeaseSpec {
            holder_identity: Some(record.holder.clone()),
            lease_duration_seconds: i32::try_from(record.duration_s).ok(),
            renew_time: micro_time(&record.renew_time),
            acquire_time: micro_time(&record.renew_time),
            lease_transitions: i32::try_from(record.transitions).ok(),
            ..Default::default()
        }),
        ..Default::default()
    };
    lease.metadata.name = Some(name.to_owned());
    lease.metadata.annotations = Some(
        [
            (EPOCH.to_owned(), record.epoch.to_string()),
            (ADMIN_URL.to_owned(), record.leader.admin.clone()),
            (GRPC_URL.to_owned(), record.leader.grpc.clone()),
        ]
        .into(),
    );
    let result = if record.resource_version.is_empty() {
        api.create(&PostParams::default(), &lease).await
    } else {
        lease.metadata.resource_version = Some(record.resource_version.clone());
        api.replace(name, &PostParams::default(), &lease).await
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(format!("writing lease {name}: {e}")),
    }
}
