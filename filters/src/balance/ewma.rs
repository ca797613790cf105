//! Per-endpoint load: outstanding requests and a peak-EWMA latency estimate, kept in atomics
//! so that picks and updates never lock. The estimate jumps up to any slower sample at once
//! (peak) and decays toward faster samples, and toward zero while idle, with time constant
//! `decay`, so an endpoint that was slow once is tried again later.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Assumed latency of an endpoint never measured (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the moving average (Linkerd's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub struct EndpointLoad {
    pending: AtomicU32,
    /// f64 nanoseconds, as bits.
    rtt: AtomicU64,
    updated: AtomicU64,
    decay_ns: f64,
}

impl Default for EndpointLoad {
    fn default() -> Self {
        Self::new(DEFAULT_RTT, DEFAULT_DECAY)
    }
}

impl EndpointLoad {
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            pending: AtomicU32::new(0),
            rtt: AtomicU64::new((default_rtt.as_nanos() as f64).to_bits()),
            updated: AtomicU64::new(nanos(Instant::now())),
            decay_ns: (decay.as_nanos() as f64).max(1.0),
        }
    }

    /// A request to this endpoint starts.
    pub fn start(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started with [`start`](Self::start) ended after `rtt`.
    pub fn finish(&self, rtt: Duration, now: Instant) {
        // Saturate at zero: a finish without a start must not wrap.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(1))
            });
        self.observe(rtt, now);
    }

    /// Records a latency sample: a sample above the current estimate replaces it (peak);
    /// otherwise the estimate moves toward it by the weight of the time since the last
    /// update, `e' = e·w + s·(1−w)` with `w = exp(−elapsed/decay)`. Races between concurrent
    /// updates lose a sample at worst.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let (current, w) = self.decayed(now);
        let next = if sample > current {
            sample
        } else {
            // `current` is already the stored estimate times `w`.
            current + sample * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
        self.updated.store(nanos(now), Ordering::Relaxed);
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// The latency estimate as of `now`, in nanoseconds.
    pub fn rtt_estimate(&self, now: Instant) -> f64 {
        self.decayed(now).0
    }

    /// Cost for P2C: estimated latency times (outstanding + 1).
    pub fn cost(&self, now: Instant) -> f64 {
        self.rtt_estimate(now) * (f64::from(self.pending()) + 1.0)
    }

    /// (estimate decayed toward zero since the last update, the decay weight).
    fn decayed(&self, now: Instant) -> (f64, f64) {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = nanos(now).saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
        let w = (-elapsed / self.decay_ns).exp();
        (rtt * w, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1_000_000.0;

    #[test]
    fn peaks_up_at_once_and_decays_down() {
        let t0 = Instant::now();
        let l = EndpointLoad::new(Duration::from_millis(30), Duration::from_secs(10));
        l.observe(Duration::from_millis(30), t0);
        l.observe(Duration::from_millis(500), t0);
        assert!(
            (l.rtt_estimate(t0) - 500.0 * MS).abs() < MS,
            "peak is taken at once"
        );
        // A fast sample ten seconds (one time constant) later pulls it most of the way down.
        let t1 = t0 + Duration::from_secs(10);
        l.observe(Duration::from_millis(10), t1);
        let e = l.rtt_estimate(t1) / MS;
        let expected = 500.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((e - expected).abs() < 1.0, "{e} vs {expected}");
        // Idle time lets the estimate fall, so a once-slow endpoint is tried again.
        assert!(l.rtt_estimate(t1 + Duration::from_secs(60)) < MS);
    }

    #[test]
    fn cost_grows_with_pending_and_never_wraps() {
        let now = Instant::now();
        let l = EndpointLoad::default();
        let idle = l.cost(now);
        l.start();
        l.start();
        assert!((l.cost(now) / idle - 3.0).abs() < 0.01);
        l.finish(Duration::from_millis(30), now);
        l.finish(Duration::from_millis(30), now);
        l.finish(Duration::from_millis(30), now);
        assert_eq!(l.pending(), 0);
    }
}
