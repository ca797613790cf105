//! Consistent hashing (Ketama-style ring): each endpoint owns points on a 64-bit ring in
//! proportion to its weight; a key goes to the first point at or after its hash. Adding or
//! removing one endpoint moves only that endpoint's share of keys.

use remora_control_api::cluster::Endpoint;

use crate::hash::{hash64, mix};

const POINTS_PER_WEIGHT: u64 = 160;
/// Most points on one ring (16 bytes each: 4 MiB). Past it, points per unit of weight shrink
/// for every endpoint alike, so weight ratios hold.
const MAX_RING_POINTS: u64 = 1 << 18;

#[derive(Debug)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(endpoints: &[Endpoint], ring_size: u32) -> Self {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
        // Points per unit of weight: fixed (as ketama) so that membership changes move only the
        // changed endpoint's keys; raised to a power of two only when the ring would be
        // smaller than `ring_size`.
        let min_per_weight = u64::from(ring_size.max(1)).div_ceil(total.max(1));
        let per_weight = if min_per_weight <= POINTS_PER_WEIGHT {
            POINTS_PER_WEIGHT
        } else {
            min_per_weight.next_power_of_two()
        };
        let scale = if total * per_weight > MAX_RING_POINTS {
            MAX_RING_POINTS as f64 / total as f64
        } else {
            per_weight as f64
        };
        let mut points = Vec::with_capacity((total * per_weight).min(MAX_RING_POINTS) as usize);
        for (i, e) in endpoints.iter().enumerate() {
            let share = ((f64::from(e.weight.max(1)) * scale).round() as u64).max(1);
            // Points derive from the address, not the index: stable across reorderings.
            let base = hash64(e.address.to_string().as_bytes());
            for k in 0..share {
                points.push((mix(base ^ mix(k + 1)), i as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint index for a key hash.
    pub fn lookup(&self, hash: u64) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let i = self.points.partition_point(|p| p.0 < hash);
        let (_, idx) = self.points[if i == self.points.len() { 0 } else { i }];
        idx as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16, weight: u32) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                address: format!("10.0.0.{}:80", i + 1).parse().expect("addr"),
                weight,
                identity: None,
            })
            .collect()
    }

    #[test]
    fn same_key_same_endpoint_and_spread() {
        let ring = Ring::new(&eps(4, 1), 1024);
        let mut counts = [0usize; 4];
        for k in 0..8000u32 {
            let h = hash64(format!("user-{k}").as_bytes());
            let e = ring.lookup(h);
            assert_eq!(e, ring.lookup(h));
            counts[e] += 1;
        }
        for c in counts {
            assert!((1400..2600).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = eps(4, 1);
        let before = Ring::new(&all, 256);
        let after = Ring::new(&all[..3], 256);
        let mut moved = 0;
        for k in 0..4000u32 {
            let h = hash64(format!("k{k}").as_bytes());
            let b = before.lookup(h);
            if b != 3 && after.lookup(h) != b {
                moved += 1;
            }
        }
        assert_eq!(moved, 0);
    }

    #[test]
    fn weights_shift_share() {
        let mut e = eps(2, 1);
        e[1].weight = 3;
        let ring = Ring::new(&e, 1024);
        let heavy = (0..8000u32)
            .filter(|k| ring.lookup(hash64(&k.to_le_bytes())) == 1)
            .count();
        assert!((5400..6600).contains(&heavy), "{heavy}");
    }

    #[test]
    fn large_weight_ratios_hold_and_the_ring_stays_bounded() {
        let mut e = eps(2, 1);
        e[1].weight = 5000;
        let ring = Ring::new(&e, 1024);
        assert!(ring.points.len() as u64 <= MAX_RING_POINTS + 2);
        let light = ring.points.iter().filter(|(_, i)| *i == 0).count() as f64;
        let heavy = ring.points.iter().filter(|(_, i)| *i == 1).count() as f64;
        assert!((heavy / light - 5000.0).abs() < 100.0, "{heavy} / {light}");
    }
}
