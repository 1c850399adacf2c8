//! spillway-control: the control plane.
//!
//! # Layout
//!
//! - [`check`]: offline validation of routing config files, the same validation the sidecar and
//!   (later) the snapshot builder run, for CI pipelines and pre-commit hooks.
//!
//! Serving snapshots over `RoutingDiscovery.Stream`, the admin API, fleet telemetry, leases and
//! the injector arrive in later issues (see ARCHITECTURE.md).

pub mod check;
