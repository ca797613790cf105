//! Remora's policy, free of sockets and runtime wiring: what to do with a request, not how to
//! move its bytes.
//!
//! - [`authz`]: inbound authorization decisions; [`ratelimit`] (GCRA token buckets, keyed
//!   in a bounded LRU) and [`fault`] (abort and delay injection).
//! - [`router`]: virtual host by authority, then the first route whose match holds.
//! - [`split`]: weighted choice among a route's clusters.
//! - [`balance`]: endpoint choice within a cluster (P2C over peak-EWMA, round robin, random,
//!   ring hash), all weight-aware.
//! - [`rewrite`] and [`timeout`]: per-route `tower` layers.
//! - Resilience state machines: [`retry`] (conditions, backoff), [`budget`] (retry budget),
//!   [`breaker`] (concurrency thresholds), [`outlier`] (ejection), [`health`] (active
//!   checks), [`latency`] (the quantile estimate behind hedging).

pub mod authz;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod fault;
pub mod hash;
pub mod health;
pub mod latency;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod rewrite;
pub mod router;
pub mod split;
pub mod timeout;
