//! Remora's reference control plane: reads the mesh model (a directory of `Mesh` documents
//! plus an applied overlay), discovers endpoints, derives each proxy's configuration and
//! streams it over `remora.control.v1.Control/Stream`, with an operator API and CLI.
//!
//! Flow: files + overlay → [`model`] (merge, validate) → [`discovery`]/[`dns`] endpoints →
//! [`generate`] per sidecar (validated as the proxy will) → [`state::MeshState`] on a watch
//! channel → one [`stream`] task per proxy sends only what changed for it.

pub mod api;
pub mod cli;
pub mod client;
pub mod consul;
pub mod discovery;
pub mod dns;
pub mod eureka;
pub mod generate;
pub mod identity;
pub mod inject;
pub mod kubernetes;
pub mod logging;
pub mod marathon;
pub mod metrics;
pub mod model;
pub mod nomad;
pub mod polled;
pub mod registry;
pub mod serve;
pub mod state;
pub mod stream;
pub mod watch;
pub mod webhook;
