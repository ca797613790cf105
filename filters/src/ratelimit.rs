//! Token-bucket rate limiting as GCRA (the generic cell rate algorithm): a bucket is one
//! "theoretical arrival time", so the whole-route bucket is a single atomic updated with a
//! compare-and-swap, no lock. `requests` per `interval` with a burst of `burst`: a full
//! bucket admits `burst` requests at once, then one per `interval / requests`. Keyed limits
//! keep one bucket per key in a bounded LRU map: a client rotating keys evicts the least
//! recently used, never grows memory.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The arithmetic of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds between two tokens (`interval / requests`), at least 1.
    emission_ns: u64,
    /// How far ahead of now the arrival time may run: `burst × emission`.
    tolerance_ns: u64,
    pub requests: u32,
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `requests` (≥ 1) per `interval` (> 0), bursts of `burst` (≥ 1).
    pub fn new(requests: u32, interval: Duration, burst: u32) -> Self {
        let requests = requests.max(1);
        let burst = burst.max(1);
        let interval_ns = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let emission_ns = (interval_ns / u64::from(requests)).max(1);
        Self {
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(burst)),
            requests,
            interval,
            burst,
        }
    }
}

/// The outcome of asking for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: u32,
    /// When the bucket is full again (for `ratelimit: t=`).
    pub reset: Duration,
    /// When a refused request could succeed (for `retry-after`); zero when allowed.
    pub retry_after: Duration,
}

impl Rate {
    /// One step of GCRA from arrival time `tat` at `now` (both ns): the new arrival time
    /// (None: refused) and the verdict.
    fn step(&self, tat: u64, now: u64) -> (Option<u64>, Verdict) {
        let next = tat.max(now).saturating_add(self.emission_ns);
        let ahead = next - now;
        if ahead > self.tolerance_ns {
            let waited = tat.max(now) - now;
            return (
                None,
                Verdict {
                    allowed: false,
                    remaining: 0,
                    reset: Duration::from_nanos(waited),
                    retry_after: Duration::from_nanos(ahead - self.tolerance_ns),
                },
            );
        }
        let remaining = (self.tolerance_ns - ahead) / self.emission_ns;
        (
            Some(next),
            Verdict {
                allowed: true,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: Duration::from_nanos(ahead),
                retry_after: Duration::ZERO,
            },
        )
    }
}

/// A clock origin shared by a limit's buckets (tokio's clock, so tests can pause it).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock {
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One bucket, lock-free.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    pub fn acquire(&self, rate: &Rate, now: u64) -> Verdict {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let (next, verdict) = rate.step(tat, now);
            let Some(next) = next else {
                return verdict;
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return verdict,
                Err(current) => tat = current,
            }
        }
    }
}

/// Keys longer than this are stored as a hash.
pub const MAX_KEY_BYTES: usize = 128;

/// Buckets by key, at most `max_keys` of them (least recently used evicted).
#[derive(Debug)]
pub struct KeyedBuckets {
    map: Mutex<lru::LruCache<Box<[u8]>, u64>>,
    evicted: AtomicU64,
}

impl KeyedBuckets {
    pub fn new(max_keys: usize) -> Self {
        let cap = NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN);
        Self {
            map: Mutex::new(lru::LruCache::new(cap)),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn acquire(&self, key: &[u8], rate: &Rate, now: u64) -> Verdict {
        // Long keys (a huge header value) are kept as a hash, so memory is bounded by the
        // key count alone.
        let hashed;
        let key = if key.len() > MAX_KEY_BYTES {
            hashed = [&[0xff][..], &crate::hash::hash64(key).to_be_bytes()[..]].concat();
            &hashed[..]
        } else {
            key
        };
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = map.get(key).copied().unwrap_or(0);
        let (next, verdict) = rate.step(tat, now);
        if let Some(next) = next {
            if map.len() == map.cap().get() && !map.contains(key) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            map.put(key.into(), next);
        }
        verdict
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted to stay within the cap, since the limit was created.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_admits_the_burst_then_the_rate() {
        let rate = Rate::new(50, Duration::from_secs(1), 10);
        let clock = Clock::default();
        let bucket = Bucket::default();
        let now = clock.now_ns();
        let admitted = (0..20)
            .filter(|_| bucket.acquire(&rate, now).allowed)
            .count();
        assert_eq!(admitted, 10, "the burst");
        // 200 requests/s for 5 s: 50/s get through.
        let mut allowed = 0;
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(5)).await;
            if bucket.acquire(&rate, clock.now_ns()).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 250);
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_carry_remaining_reset_and_retry_after() {
        let rate = Rate::new(2, Duration::from_secs(1), 2);
        let clock = Clock::default();
        let bucket = Bucket::default();
        let v = bucket.acquire(&rate, clock.now_ns());
        assert_eq!((v.allowed, v.remaining), (true, 1));
        assert_eq!(v.reset, Duration::from_millis(500));
        let v = bucket.acquire(&rate, clock.now_ns());
        assert_eq!((v.allowed, v.remaining), (true, 0));
        assert_eq!(v.reset, Duration::from_secs(1));
        let v = bucket.acquire(&rate, clock.now_ns());
        assert!(!v.allowed);
        assert_eq!(v.retry_after, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!bucket.acquire(&rate, clock.now_ns()).allowed);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.acquire(&rate, clock.now_ns()).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_only_up_to_the_burst() {
        let rate = Rate::new(10, Duration::from_secs(1), 3);
        let clock = Clock::default();
        let bucket = Bucket::default();
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = clock.now_ns();
        let admitted = (0..10)
            .filter(|_| bucket.acquire(&rate, now).allowed)
            .count();
        assert_eq!(admitted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_their_own_buckets_and_the_map_stays_bounded() {
        let rate = Rate::new(1, Duration::from_secs(60), 2);
        let clock = Clock::default();
        let keyed = KeyedBuckets::new(100);
        let now = clock.now_ns();
        for key in [&b"a"[..], b"b"] {
            let n = (0..5)
                .filter(|_| keyed.acquire(key, &rate, now).allowed)
                .count();
            assert_eq!(n, 2, "{key:?}");
        }
        for i in 0..100_000u32 {
            keyed.acquire(&i.to_be_bytes(), &rate, now);
            assert!(keyed.len() <= 100);
        }
        assert_eq!(keyed.len(), 100);
        assert_eq!(keyed.evicted(), 100_000 - 98);
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let rate = Rate::new(u32::MAX, Duration::from_nanos(1), u32::MAX);
        let b = Bucket::default();
        assert!(b.acquire(&rate, u64::MAX - 1).allowed);
        let year = Duration::from_secs(365 * 86_400);
        let slow = Rate::new(1, year, 1);
        let b = Bucket::default();
        assert!(b.acquire(&slow, 0).allowed);
        let refused = b.acquire(&slow, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, year);
    }
}
