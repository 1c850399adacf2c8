//! spillway-control: the control plane.
//!
//! # Layout
//!
//! - [`admin`]: the admin HTTP API (JWT roles): read, validate, replace, roll back, history, nodes;
//! - [`check`]: offline validation of routing config files, the same validation the sidecar and
//!   the snapshot builder run, for CI pipelines and pre-commit hooks;
//! - [`source`]: the watched config directory, merged, validated and published;
//! - [`leases`]: dividing each PT pool among sidecars by demand (floor, reserve, expiry);
//! - [`snapshot`]: immutable, content-versioned routing snapshots;
//! - [`ads`]: `RoutingDiscovery.Stream`, the ACK/NACK push of snapshots to sidecars, and what
//!   is known of each sidecar;
//! - [`tls`]: the gRPC server's TLS and mutual TLS.
//!
//! Config sources, the admin API, fleet telemetry, PT leases, feedback and the injector come in
//! later increments of issues 6 and 7 (see ARCHITECTURE.md).

pub mod admin;
pub mod ads;
pub mod check;
pub mod leases;
pub mod snapshot;
pub mod source;
pub mod tls;
