//! spillway's test kit: scriptable fake providers and helpers to run a sidecar against them.
//!
//! # Layout
//!
//! - [`fake`]: an OpenAI-compatible fake upstream, scripted per server (flags / [`fake::Script`])
//!   and per request (`x-fake-*` headers). Used by the end-to-end tests, the quick start and
//!   load tests, so it is built to be fast.
//! - [`harness`]: starting a sidecar on `127.0.0.1:0` with a YAML config, a small client, and
//!   a round-robin TCP balancer standing in for a Kubernetes Service.
//! - [`control`]: the control plane as a real process, to kill and restart replicas.
//! - [`etcd`]: a real etcd cluster of child processes on 127.0.0.1.
//!
//! The end-to-end tests themselves live in `tests/tests/`.

pub mod control;
pub mod etcd;
pub mod fake;
pub mod harness;
pub mod scenario;
