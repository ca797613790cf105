//! Endpoint choice within a cluster. A [`Balancer`] is built once per snapshot from the
//! cluster's endpoints and policy; picks read only atomics (no locks), so every request can
//! pick concurrently.
//!
//! Policies: P2C over peak-EWMA (default, as Linkerd), round robin, random, ring hash. All
//! honour endpoint weights.

mod ewma;
mod p2c;
mod ring_hash;
mod round_robin;
mod weighted;

use std::sync::Arc;

use remora_control_api::cluster::{Endpoint, LbPolicy};

pub use ewma::{DEFAULT_DECAY, DEFAULT_RTT, EndpointLoad};
pub use ring_hash::Ring;
use round_robin::Schedule;
use weighted::Weighted;

/// Gives a balancer access to an endpoint's load statistics.
pub trait HasLoad {
    fn load(&self) -> &EndpointLoad;
}

impl<T: HasLoad> HasLoad for Arc<T> {
    fn load(&self) -> &EndpointLoad {
        (**self).load()
    }
}

/// Per-request inputs to a pick.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext {
    /// The request's hash key, for ring hash (see [`crate::hash::hash64`]).
    pub hash: Option<u64>,
}

/// A compiled balancer for one snapshot of one cluster.
#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    weighted: Weighted,
}

#[derive(Debug)]
enum Kind {
    P2c,
    RoundRobin(Schedule),
    Random,
    RingHash(Ring),
}

impl Balancer {
    pub fn new(policy: &LbPolicy, endpoints: &[Endpoint]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let kind = match policy {
            LbPolicy::P2cPeakEwma => Kind::P2c,
            LbPolicy::RoundRobin => Kind::RoundRobin(Schedule::new(&weights)),
            LbPolicy::Random => Kind::Random,
            LbPolicy::RingHash { ring_size, .. } => {
                Kind::RingHash(Ring::new(endpoints, *ring_size))
            }
        };
        Self {
            kind,
            weighted: Weighted::new(&weights),
        }
    }

    /// Picks the index of an endpoint in `endpoints` (the same list, in the same order, as
    /// the balancer was built from). `None` only when there are no endpoints.
    pub fn pick<E: HasLoad>(&self, endpoints: &[E], ctx: PickContext) -> Option<usize> {
        match endpoints.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let i = match &self.kind {
            Kind::P2c => p2c::pick(&self.weighted, endpoints, std::time::Instant::now()),
            Kind::RoundRobin(s) => s.next(),
            Kind::Random => self.weighted.draw(),
            Kind::RingHash(ring) => match ctx.hash {
                Some(h) => ring.lookup(h),
                None => self.weighted.draw(),
            },
        };
        Some(i.min(endpoints.len() - 1))
    }
}
