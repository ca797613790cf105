//! Weighted round robin: a schedule computed once per snapshot with nginx's smooth weighted
//! round-robin (so weights 5:1:1 interleave as a a b a c a a, not a a a a a b c), then walked
//! with one atomic counter.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Schedules longer than this are scaled down (weights keep their proportions roughly).
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Schedule {
    order: Vec<u32>,
    next: AtomicUsize,
}

impl Schedule {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let order = smooth_order(&scaled(weights));
        // Start at a random point so proxies restarted together do not move in lockstep.
        let next = AtomicUsize::new(fastrand::usize(..order.len().max(1)));
        Self { order, next }
    }

    pub(crate) fn next(&self) -> usize {
        let n = self.order.len();
        if n == 0 {
            return 0;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.order[i] as usize
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Divides by the common divisor, then scales the total under `MAX_SCHEDULE`.
fn scaled(weights: &[u32]) -> Vec<u64> {
    let w: Vec<u64> = weights.iter().map(|w| u64::from((*w).max(1))).collect();
    let g = w.iter().copied().fold(0, gcd).max(1);
    let w: Vec<u64> = w.iter().map(|x| x / g).collect();
    let total: u64 = w.iter().sum();
    if total <= MAX_SCHEDULE {
        return w;
    }
    w.iter()
        .map(|x| (x * MAX_SCHEDULE / total).max(1))
        .collect()
}

fn smooth_order(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u32);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_interleaving() {
        assert_eq!(smooth_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_order(&[1, 1, 1]), vec![0, 1, 2]);
    }

    #[test]
    fn equal_weights_rotate_evenly() {
        let s = Schedule::new(&[2, 2, 2]);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[s.next()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn huge_weights_stay_bounded() {
        let s = Schedule::new(&[10_000, 1, 9_999]);
        assert!(s.order.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(s.order.contains(&1));
    }
}
