//! spillway-control: the control plane.
//!
//! # Layout
//!
//! - [`forward`]: a follower's admin API sending the calls only the leader can answer to it;
//! - [`admin`]: the admin HTTP API (JWT roles): read, validate, replace, roll back, history, nodes;
//! - [`check`]: offline validation of routing config files, the same validation the sidecar and
//!   the snapshot builder run, for CI pipelines and pre-commit hooks;
//! - [`crd`]: the `SpillwayRouting` custom resource (its spec is one routing file) and the
//!   `SpillwayDemotion` one, their definitions derived from the model;
//! - [`crd_admission`]: admission checks of SpillwayRouting objects (`POST /validate-routing`);
//! - [`crd_history`]: the config history of SpillwayRouting objects, as ControllerRevisions;
//! - [`crd_source`]: the routing config from the namespace's `SpillwayRouting` objects, watched
//!   by every replica, their status conditions, and the admin API's own object;
//! - [`source`]: the watched config directory, merged, validated and published;
//! - [`state`]: the config in force — the base config with feedback demotions applied — and
//!   its change history;
//! - [`election`]: one leader among replicas (a Kubernetes Lease, conditional writes) for the
//!   fleet-wide arithmetic; its epoch orders lease grants;
//! - [`etcd`]: the store off Kubernetes — the config with compare-and-swap, its history, the
//!   shared state and the election on a real etcd cluster;
//! - [`leases`]: dividing each PT pool among sidecars by demand (floor, reserve, expiry);
//! - [`snapshot`]: immutable, content-versioned routing snapshots;
//! - [`ads`]: `RoutingDiscovery.Stream`, the ACK/NACK push of snapshots to sidecars, and what
//!   is known of each sidecar;
//! - [`telemetry`]: `Telemetry.Report`, merging sidecar reports and answering with lease grants
//!   and fleet-wide breaker directives, on a tick;
//! - [`report`]: the bounds a sidecar's report must keep before any of it is merged;
//! - [`shared`]: the feedback demotions every replica applies (one `SpillwayDemotion` object or
//!   etcd key each) and the leader's checkpoint (one ConfigMap or etcd key);
//! - [`fleet`]: the merged fleet view and its fleet-wide breaker judgement;
//! - [`feedback`]: user-feedback trends and the drops that demote an endpoint;
//! - [`inject`]: the sidecar-injecting mutating admission webhook (`POST /inject`);
//! - [`webhook`]: the webhook's HTTPS server and its certificate (files, or self-signed and
//!   bootstrapped through the Kubernetes API by [`kube`]);
//! - [`health`]: `/healthz` and `/readyz` for the kubelet;
//! - [`identity`]: who a sidecar is — its projected service-account token reviewed by the
//!   Kubernetes API — so that it reports only for itself;
//! - [`metrics`]: the control plane's own Prometheus metrics (refusals, bounded maps);
//! - [`listen`]: the HTTP listeners (admin, health, webhook) with handshake, head, idle and
//!   body timeouts;
//! - [`tls`]: the gRPC server's TLS and mutual TLS.

pub mod admin;
pub mod ads;
pub mod check;
pub mod crd;
pub mod crd_admission;
pub mod crd_history;
pub mod crd_source;
pub mod election;
pub mod etcd;
pub mod feedback;
pub mod fleet;
pub mod forward;
pub mod health;
pub mod identity;
pub mod inject;
pub mod kube;
pub mod leases;
pub mod listen;
pub mod metrics;
pub mod report;
pub mod shared;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod webhook;
