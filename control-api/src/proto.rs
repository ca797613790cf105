//! Generated protobuf types (prost) with their canonical JSON mapping (pbjson), and the
//! control-stream gRPC stubs (tonic). Modules mirror the proto packages; the `remora.v1`
//! configuration types are re-exported at this level.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod remora {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/remora.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/remora.v1.serde.rs"));
    }
    /// The control stream (`remora.control.v1.Control/Stream`).
    pub mod control {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/remora.control.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/remora.control.v1.serde.rs"));
        }
    }
    /// The mesh model the control plane reads (`remora-control serve --mesh DIR`).
    pub mod mesh {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/remora.mesh.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/remora.mesh.v1.serde.rs"));
        }
    }
}

pub use remora::control::v1 as control;
pub use remora::mesh::v1 as mesh;
pub use remora::v1::*;
