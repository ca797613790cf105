//! A route's observed latency quantile (the default hedging delay): a log-bucketed
//! histogram of atomic counters (four buckets per doubling, 1 µs to ~70 s), halved every
//! [`DECAY_EVERY`] samples so it follows recent traffic. The p95 is recomputed every 64
//! samples and read with one atomic load.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const PER_DOUBLING: u32 = 4;
const BUCKETS: usize = 26 * PER_DOUBLING as usize;
/// Samples after which every count is halved.
pub const DECAY_EVERY: u32 = 4096;
/// Samples needed before a quantile is reported.
pub const MIN_SAMPLES: u32 = 100;

#[derive(Debug)]
pub struct LatencyEstimate {
    buckets: [AtomicU32; BUCKETS],
    samples: AtomicU32,
    /// The cached p95 in microseconds; 0 until there are enough samples.
    p95_us: AtomicU64,
}

impl Default for LatencyEstimate {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            samples: AtomicU32::new(0),
            p95_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let log2 = 63 - us.leading_zeros();
    // Position within the doubling from the two bits below the leading one.
    let frac = if log2 >= 2 {
        (us >> (log2 - 2)) & 0b11
    } else {
        (us << (2 - log2)) & 0b11
    };
    #[allow(clippy::cast_possible_truncation)]
    let i = (log2 * PER_DOUBLING) as usize + frac as usize;
    i.min(BUCKETS - 1)
}

/// The upper edge of a bucket, in microseconds.
fn upper_us(i: usize) -> u64 {
    let log2 = (i / PER_DOUBLING as usize) as u32;
    let frac = (i % PER_DOUBLING as usize) as u64;
    // Bucket covers [2^log2 × (4+frac)/4, 2^log2 × (5+frac)/4).
    ((1u64 << log2) * (5 + frac)).div_ceil(4)
}

impl LatencyEstimate {
    pub fn record(&self, d: Duration) {
        self.buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
        let n = self.samples.fetch_add(1, Ordering::AcqRel) + 1;
        if n.is_multiple_of(64) {
            self.recompute();
        }
        if n >= DECAY_EVERY
            && self
                .samples
                .compare_exchange(n, n / 2, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for b in &self.buckets {
                let v = b.load(Ordering::Relaxed);
                b.store(v / 2, Ordering::Relaxed);
            }
        }
    }

    fn recompute(&self) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .collect();
        let total: u64 = counts.iter().sum();
        if total < u64::from(MIN_SAMPLES) {
            return;
        }
        let rank = total * 95 / 100;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                self.p95_us.store(upper_us(i), Ordering::Release);
                return;
            }
        }
    }

    /// The recent p95, once [`MIN_SAMPLES`] have been seen.
    pub fn p95(&self) -> Option<Duration> {
        match self.p95_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_edges_contain_their_values() {
        let mut last = 0;
        for us in [
            1u64, 2, 3, 5, 7, 10, 100, 999, 1000, 1001, 65_000, 1_000_000, 30_000_000,
        ] {
            let i = bucket_of(Duration::from_micros(us));
            assert!(i >= last, "{us}");
            assert!(upper_us(i) >= us, "{us}: edge {}", upper_us(i));
            // Resolution: the edge is within 25% above the value.
            assert!(upper_us(i) * 4 <= us * 5 + 4, "{us}: edge {}", upper_us(i));
            last = i;
        }
        assert_eq!(bucket_of(Duration::from_secs(1_000_000)), BUCKETS - 1);
    }

    #[test]
    fn p95_needs_samples_then_tracks_the_tail() {
        let e = LatencyEstimate::default();
        for _ in 0..64 {
            e.record(Duration::from_millis(1));
        }
        assert_eq!(e.p95(), None);
        // 96% at 1 ms, 4% at 100 ms: p95 is about 1 ms.
        for i in 0..1000 {
            let d = if i % 25 == 0 { 100 } else { 1 };
            e.record(Duration::from_millis(d));
        }
        let p = e.p95().unwrap_or_default();
        assert!(
            p >= Duration::from_millis(1) && p <= Duration::from_micros(1250),
            "{p:?}"
        );
        // Traffic gets slower: the estimate follows within a few decay periods.
        for _ in 0..(DECAY_EVERY * 3) {
            e.record(Duration::from_millis(20));
        }
        let p = e.p95().unwrap_or_default();
        assert!(
            p >= Duration::from_millis(20) && p <= Duration::from_millis(25),
            "{p:?}"
        );
    }
}
