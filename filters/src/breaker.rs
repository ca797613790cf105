//! Concurrency thresholds (circuit breaking in Envoy's sense): counters of requests,
//! pending connects, retries and connections per cluster. Taking a slot above its limit
//! fails at once (the proxy answers 503 `overflow`) instead of queueing without bound. The
//! counters survive configuration swaps; limits are read from the current settings, so a
//! lowered limit applies to new requests while in-flight ones finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which limit refused a request: the `limit` label of `remora_overflows_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "max-connections",
            Limit::PendingRequests => "max-pending-requests",
            Limit::Requests => "max-requests",
            Limit::Retries => "max-retries",
        }
    }
}

/// The limit that refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} reached ({max}); failing fast instead of queueing", .limit.as_str())]
pub struct Overflow {
    pub limit: Limit,
    pub max: u32,
}

/// One counter with a limit supplied at each acquire.
#[derive(Debug, Default)]
pub struct Counter(AtomicU32);

impl Counter {
    /// Takes a slot if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, limit: Limit, max: u32) -> Result<Slot, Overflow> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Slot(Arc::clone(self)))
            .map_err(|_| Overflow { limit, max })
    }

    /// Slots taken now.
    pub fn current(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// A taken slot; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Counter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cluster's counters.
#[derive(Debug, Default)]
pub struct Breakers {
    pub connections: Arc<Counter>,
    pub pending: Arc<Counter>,
    pub requests: Arc<Counter>,
    pub retries: Arc<Counter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let c = Arc::new(Counter::default());
        let slots: Vec<Slot> = (0..50)
            .map(|_| c.try_acquire(Limit::Requests, 50))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(slots.len(), 50);
        assert_eq!(
            c.try_acquire(Limit::Requests, 50).err(),
            Some(Overflow {
                limit: Limit::Requests,
                max: 50
            })
        );
        drop(slots);
        assert_eq!(c.current(), 0);
        assert!(c.try_acquire(Limit::Requests, 50).is_ok());
        assert_eq!(c.current(), 0);
    }

    #[test]
    fn a_lowered_limit_applies_to_new_slots_only() {
        let c = Arc::new(Counter::default());
        let held: Vec<Slot> = (0..10)
            .filter_map(|_| c.try_acquire(Limit::Retries, 10).ok())
            .collect();
        assert_eq!(held.len(), 10);
        assert!(c.try_acquire(Limit::Retries, 5).is_err());
        drop(held);
        assert!(c.try_acquire(Limit::Retries, 5).is_ok());
        assert!(c.try_acquire(Limit::Retries, 0).is_err());
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let c = Arc::new(Counter::default());
        let peak = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (c, peak) = (Arc::clone(&c), Arc::clone(&peak));
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Ok(slot) = c.try_acquire(Limit::Requests, 3) {
                            peak.fetch_max(c.current(), Ordering::AcqRel);
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert_eq!(c.current(), 0);
    }
}
