//! Generated protobuf types (prost) with their canonical JSON mapping (pbjson).
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

include!(concat!(env!("OUT_DIR"), "/remora.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/remora.v1.serde.rs"));
