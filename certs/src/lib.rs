//! Remora's mesh identity: SPIFFE identities ([`spiffe`]), the mesh CA and the workload
//! certificates it issues ([`ca`]), and a readable account of any certificate file
//! ([`inspect`]). Built on rcgen (ECDSA P-256 keys by default) and x509-parser; keys are
//! written with 0600 permissions.

pub mod ca;
pub mod csr;
pub mod inspect;
pub mod spiffe;
pub mod ttl;

pub use spiffe::{InvalidSpiffeId, SpiffeId};
