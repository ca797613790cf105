//! The retry budget of a cluster: over a sliding window, retries (and hedges) may number at
//! most `ratio` × the requests seen plus `min_retries_per_second` × the window's seconds, so a
//! failing backend cannot turn its callers into a retry storm.
//!
//! The window is ten slots of atomic counters (no lock on the request path); a slot is
//! cleared when time comes round to it again. The budget survives configuration swaps of its
//! cluster; a changed ratio or floor applies at once to the counts already in the window.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use remora_control_api::resilience::RetryBudget;
use tokio::time::Instant;

const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// The slot number (since `start`) its counts belong to, plus one (0: never used).
    epoch: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

#[derive(Debug)]
pub struct Budget {
    start: Instant,
    slots: [Slot; SLOTS],
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            slots: Default::default(),
        }
    }

    fn slot_len(cfg: &RetryBudget) -> Duration {
        (cfg.window / SLOTS as u32).max(Duration::from_millis(1))
    }

    /// The current slot, cleared first if it holds counts from an earlier round.
    fn current(&self, cfg: &RetryBudget, now: Instant) -> (&Slot, u64) {
        let n = now.duration_since(self.start).as_nanos() / Self::slot_len(cfg).as_nanos();
        let n = u64::try_from(n).unwrap_or(u64::MAX - 1);
        #[allow(clippy::cast_possible_truncation)]
        let slot = &self.slots[(n % SLOTS as u64) as usize];
        let epoch = slot.epoch.load(Ordering::Acquire);
        if epoch != n + 1
            && slot
                .epoch
                .compare_exchange(epoch, n + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Release);
            slot.retries.store(0, Ordering::Release);
        }
        (slot, n)
    }

    /// Counts a request (its first try).
    pub fn deposit(&self, cfg: &RetryBudget, now: Instant) {
        self.current(cfg, now)
            .0
            .requests
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Sums the window's counts: (requests, retries).
    fn totals(&self, current: u64) -> (u64, u64) {
        let oldest = (current + 1).saturating_sub(SLOTS as u64);
        let mut totals = (0, 0);
        for s in &self.slots {
            let e = s.epoch.load(Ordering::Acquire);
            if e > oldest && e <= current + 1 {
                totals.0 += u64::from(s.requests.load(Ordering::Acquire));
                totals.1 += u64::from(s.retries.load(Ordering::Acquire));
            }
        }
        totals
    }

    /// Retries allowed in the window now.
    pub fn allowance(&self, cfg: &RetryBudget, now: Instant) -> u64 {
        let (_, n) = self.current(cfg, now);
        let (requests, _) = self.totals(n);
        Self::allowance_for(cfg, requests)
    }

    fn allowance_for(cfg: &RetryBudget, requests: u64) -> u64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let ratio = (cfg.ratio * requests as f64).floor() as u64;
        let floor = u64::from(cfg.min_retries_per_second) * cfg.window.as_secs().max(1);
        ratio + floor
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn withdraw(&self, cfg: &RetryBudget, now: Instant) -> bool {
        let (slot, n) = self.current(cfg, now);
        let (requests, retries) = self.totals(n);
        if retries >= Self::allowance_for(cfg, requests) {
            return false;
        }
        slot.retries.fetch_add(1, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, floor: u32) -> RetryBudget {
        RetryBudget {
            ratio,
            min_retries_per_second: floor,
            window: Duration::from_secs(10),
        }
    }

    fn spend(b: &Budget, c: &RetryBudget) -> u64 {
        let mut n = 0;
        while b.withdraw(c, Instant::now()) {
            n += 1;
            assert!(n < 1_000_000, "budget never ran out");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn floor_alone_allows_min_per_second_times_window() {
        let c = cfg(0.2, 10);
        let b = Budget::new();
        assert_eq!(spend(&b, &c), 100);
        assert!(!b.withdraw(&c, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_adds_a_share_of_requests() {
        let c = cfg(0.2, 0);
        let b = Budget::new();
        for _ in 0..1000 {
            b.deposit(&c, Instant::now());
        }
        assert_eq!(b.allowance(&c, Instant::now()), 200);
        assert_eq!(spend(&b, &c), 200);
        // More requests earn more retries.
        for _ in 0..50 {
            b.deposit(&c, Instant::now());
        }
        assert_eq!(spend(&b, &c), 10);
        // Ratio and floor together.
        let both = cfg(0.5, 1);
        let b = Budget::new();
        for _ in 0..100 {
            b.deposit(&both, Instant::now());
        }
        assert_eq!(spend(&b, &both), 50 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let c = cfg(1.0, 0);
        let b = Budget::new();
        for _ in 0..100 {
            b.deposit(&c, Instant::now());
        }
        assert_eq!(spend(&b, &c), 100);
        // Half the window later the old requests still count, and so do the spent retries.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(&c, Instant::now()));
        // Once the window has passed both are forgotten.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.allowance(&c, Instant::now()), 0);
        for _ in 0..10 {
            b.deposit(&c, Instant::now());
        }
        assert_eq!(spend(&b, &c), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_ratio_applies_to_counts_in_the_window() {
        let b = Budget::new();
        for _ in 0..100 {
            b.deposit(&cfg(0.1, 0), Instant::now());
        }
        assert_eq!(spend(&b, &cfg(0.1, 0)), 10);
        assert_eq!(spend(&b, &cfg(0.3, 0)), 20);
        assert_eq!(spend(&b, &cfg(0.0, 0)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_backend_cannot_storm() {
        // Every request fails and wants 3 retries: attempts stay under
        // (1 + ratio) × requests + floor × window.
        let c = cfg(0.2, 10);
        let b = Budget::new();
        let mut attempts = 0u64;
        let requests = 5000u64;
        for i in 0..requests {
            if i % 50 == 0 {
                tokio::time::advance(Duration::from_millis(20)).await;
            }
            b.deposit(&c, Instant::now());
            attempts += 1;
            for _ in 0..3 {
                if b.withdraw(&c, Instant::now()) {
                    attempts += 1;
                }
            }
        }
        // 5000 requests over 2 s: all within one window.
        assert!(attempts <= requests + requests / 5 + 100, "{attempts}");
        assert!(attempts >= requests + requests / 5, "{attempts}");
    }
}
