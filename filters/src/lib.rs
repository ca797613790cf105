//! Remora's policy, free of sockets and runtime wiring: what to do with a request, not how to
//! move its bytes.
//!
//! - [`router`]: virtual host by authority, then the first route whose match holds.
//! - [`split`]: weighted choice among a route's clusters.
//! - [`balance`]: endpoint choice within a cluster (P2C over peak-EWMA, round robin, random,
//!   ring hash), all weight-aware.
//! - [`rewrite`] and [`timeout`]: per-route `tower` layers.

pub mod balance;
pub mod hash;
pub mod rewrite;
pub mod router;
pub mod split;
pub mod timeout;
