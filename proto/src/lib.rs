//! spillway-api: the contract shared by the sidecar (data plane) and the control plane.
//!
//! # Layout
//!
//! - [`config`]: the routing config model (docs/design.md §2), its YAML loader and its validation.
//!   Both planes read the same format; a config that passes [`config::load_str`] is safe to serve.
//! - [`histogram`]: HDR latency histograms in the V2 compressed encoding both planes exchange.
//! - [`window`]: sliding one-second buckets (breaker counts) on tokio's clock, for both planes.
//! - [`v1`]: the generated gRPC types of the control-plane protocol (`proto/spillway/v1/*.proto`).

pub mod config;
pub mod histogram;

/// gRPC metadata key on the `UNAVAILABLE` status of a telemetry stream refused by a replica that
/// does not lead. The sidecar reconnects at once rather than backing off: the control plane is
/// up, and another connection through the Service may reach the leader.
pub const NOT_LEADER: &str = "spillway-not-leader";
/// With [`NOT_LEADER`]: the leader's gRPC URL, where the sidecar reconnects its telemetry stream
/// (verifying the server as the control plane it was configured with).
pub const LEADER: &str = "spillway-leader";
pub mod window;

/// Generated protobuf and gRPC types of the control-plane protocol.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("spillway.v1");
}
