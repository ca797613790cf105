//! The control-stream client: the proxy's side of `remora.control.v1.Control/Stream`.
//!
//! It says who it is (node, service, versions held), applies each update through
//! [`Sources`](crate::sources::Sources) and answers ACK or NACK; a NACKed update changes
//! nothing. When the stream breaks it keeps serving and reconnects with capped, jittered
//! exponential backoff. With `--cache-dir` every applied update is written to disk and read
//! back at start, so a restart during a control-plane outage serves the last good config.

pub mod cache;
pub mod client;
pub mod update;

use std::path::PathBuf;

/// How to reach the control plane and who this proxy is.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    pub url: String,
    pub node: String,
    pub service: String,
    pub cache_dir: Option<PathBuf>,
}

/// What `/config` shows about the control stream.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlStatus {
    pub server: String,
    pub node: String,
    pub service: String,
    pub connected: bool,
    /// Where the dynamic configuration being served came from: "none", "cache", "control".
    pub source: &'static str,
    pub config_version: String,
    pub endpoints_version: String,
    /// Unix time of the last applied update.
    pub last_applied: f64,
    pub last_nack: Option<NackInfo>,
    pub last_error: Option<String>,
    pub connects: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NackInfo {
    pub version: String,
    pub error: String,
    pub at: f64,
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
