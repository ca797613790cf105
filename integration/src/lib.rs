//! Fixtures for Remora's end-to-end tests: a `remora` process from a config, an echo upstream
//! that speaks HTTP/1.1 and HTTP/2, the project's Python peers, and a poll helper.

// Test fixtures: a failed expectation is a failed test, so panicking is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod client;
pub mod control;
pub mod demo;
pub mod faulty;
pub mod load;
pub mod peers;
pub mod pki;
pub mod poll;
pub mod remora;
pub mod upstream;

pub use control::ControlPlane;
pub use poll::eventually;
pub use remora::Remora;
pub use upstream::Upstream;
