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

#[cfg(test)]
mod tests {
    use super::*;

    struct E(EndpointLoad);
    impl HasLoad for E {
        fn load(&self) -> &EndpointLoad {
            &self.0
        }
    }

    fn endpoints(weights: &[u32]) -> (Vec<Endpoint>, Vec<E>) {
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint {
                address: std::net::SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                weight: *w,
            })
            .collect();
        // Equal estimates as of one instant: costs tie exactly.
        let now = std::time::Instant::now();
        let loads: Vec<E> = weights.iter().map(|_| E(EndpointLoad::default())).collect();
        for l in &loads {
            l.0.observe(DEFAULT_RTT, now);
        }
        (eps, loads)
    }

    /// Share of 8000 picks that went to endpoint 1, for `policy` over weights 1 and 3.
    fn heavy_share(policy: &LbPolicy, ctx: impl Fn(u32) -> PickContext) -> usize {
        let (eps, loads) = endpoints(&[1, 3]);
        let b = Balancer::new(policy, &eps);
        (0..8000)
            .filter(|k| b.pick(&loads, ctx(*k)) == Some(1))
            .count()
    }

    #[test]
    fn every_policy_honours_weights() {
        let ring = LbPolicy::RingHash {
            key: remora_control_api::cluster::HashKey::SourceIp,
            ring_size: 1024,
        };
        let hashed = |k: u32| PickContext {
            hash: Some(crate::hash::hash64(&k.to_le_bytes())),
        };
        let none = |_| PickContext::default();
        // Expected 6000 of 8000; the ring's share of the hash space is near 3/4 too.
        for (name, share) in [
            ("p2c", heavy_share(&LbPolicy::P2cPeakEwma, none)),
            ("round robin", heavy_share(&LbPolicy::RoundRobin, none)),
            ("random", heavy_share(&LbPolicy::Random, none)),
            ("ring hash", heavy_share(&ring, hashed)),
            ("ring hash, no key", heavy_share(&ring, none)),
        ] {
            assert!((5400..6600).contains(&share), "{name}: {share} of 8000");
        }
    }

    #[test]
    fn no_endpoints_no_pick_and_one_endpoint_always() {
        let (eps, loads) = endpoints(&[]);
        assert_eq!(
            Balancer::new(&LbPolicy::Random, &eps).pick(&loads, PickContext::default()),
            None
        );
        let (eps, loads) = endpoints(&[7]);
        let b = Balancer::new(&LbPolicy::P2cPeakEwma, &eps);
        assert!((0..100).all(|_| b.pick(&loads, PickContext::default()) == Some(0)));
    }
}
