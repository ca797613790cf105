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

/// Gives a balancer access to an endpoint's load statistics and health.
pub trait HasLoad {
    fn load(&self) -> &EndpointLoad;

    /// In service: not ejected by outlier detection, not failing active health checks.
    fn available(&self) -> bool {
        true
    }
}

impl<T: HasLoad> HasLoad for Arc<T> {
    fn load(&self) -> &EndpointLoad {
        (**self).load()
    }

    fn available(&self) -> bool {
        (**self).available()
    }
}

/// Policy picks tried before falling back to a scan for an available endpoint.
const PICK_TRIES: usize = 3;

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

    /// Picks an endpoint that is available and is not `avoid` (the endpoint a retry is
    /// moving away from). The policy's own pick is tried a few times; then any endpoint
    /// that qualifies, from a random start. When none is available every endpoint is used
    /// again (panic mode, as Envoy: better some traffic to a doubtful endpoint than none),
    /// still away from `avoid` when there is a choice.
    pub fn pick_available<E: HasLoad>(
        &self,
        endpoints: &[E],
        ctx: PickContext,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let n = endpoints.len();
        let ok = |i: usize| Some(i) != avoid && endpoints[i].available();
        let mut first = None;
        for _ in 0..PICK_TRIES {
            let i = self.pick(endpoints, ctx)?;
            if ok(i) {
                return Some(i);
            }
            first.get_or_insert(i);
            if n == 1 {
                break;
            }
        }
        let start = fastrand::usize(..n);
        if let Some(i) = (0..n).map(|k| (start + k) % n).find(|&i| ok(i)) {
            return Some(i);
        }
        // Panic mode.
        match avoid {
            Some(a) if n > 1 => Some((a + 1 + fastrand::usize(..n - 1)) % n),
            _ => first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(EndpointLoad, bool);
    impl HasLoad for E {
        fn load(&self) -> &EndpointLoad {
            &self.0
        }
        fn available(&self) -> bool {
            !self.1
        }
    }

    fn endpoints(weights: &[u32]) -> (Vec<Endpoint>, Vec<E>) {
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint {
                address: std::net::SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                weight: *w,
                identity: None,
            })
            .collect();
        // Equal estimates as of one instant: costs tie exactly.
        let now = std::time::Instant::now();
        let loads: Vec<E> = weights
            .iter()
            .map(|_| E(EndpointLoad::default(), false))
            .collect();
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

    #[test]
    fn unavailable_endpoints_and_the_failed_one_are_avoided() {
        let policies = [
            LbPolicy::P2cPeakEwma,
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::RingHash {
                key: remora_control_api::cluster::HashKey::SourceIp,
                ring_size: 1024,
            },
        ];
        for policy in &policies {
            let (eps, mut loads) = endpoints(&[1, 1, 1, 1, 1]);
            loads[1].1 = true;
            loads[3].1 = true;
            let b = Balancer::new(policy, &eps);
            for k in 0..2000u32 {
                let ctx = PickContext {
                    hash: Some(crate::hash::hash64(&k.to_le_bytes())),
                };
                let i = b.pick_available(&loads, ctx, Some(0));
                assert!(matches!(i, Some(2 | 4)), "{policy:?}: {i:?}");
                let i = b.pick_available(&loads, ctx, None);
                assert!(matches!(i, Some(0 | 2 | 4)), "{policy:?}: {i:?}");
            }
            // Every endpoint unavailable: panic mode uses them all, still away from `avoid`.
            for l in &mut loads {
                l.1 = true;
            }
            let mut seen = [0usize; 5];
            for _ in 0..2000 {
                let i = b.pick_available(&loads, PickContext::default(), Some(2));
                let i = i.unwrap_or(2);
                assert_ne!(i, 2, "{policy:?}");
                seen[i] += 1;
            }
            assert!(
                seen.iter().enumerate().all(|(i, n)| i == 2 || *n > 0),
                "{policy:?}: {seen:?}"
            );
            assert!(
                b.pick_available(&loads, PickContext::default(), None)
                    .is_some()
            );
        }
        // A single endpoint is used even when it is the one that failed.
        let (eps, loads) = endpoints(&[1]);
        let b = Balancer::new(&LbPolicy::P2cPeakEwma, &eps);
        assert_eq!(
            b.pick_available(&loads, PickContext::default(), Some(0)),
            Some(0)
        );
    }
}
