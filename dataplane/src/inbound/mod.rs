//! Inbound protocols: what applications send to the sidecar.

pub mod openai;
