//! Connection limits on a listener: new connections per second (a token bucket, bursts of
//! the same), connections open at once, and connections open at once per client address.
//! A connection over a limit is closed at accept, before any byte is read, and counted.
//! State is kept across configuration swaps while the settings stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use remora_control_api::limits::ConnectionLimits;
use remora_filters::ratelimit::{Bucket, Clock, Rate};

#[derive(Debug)]
pub struct ConnLimiter {
    pub settings: ConnectionLimits,
    rate: Option<Rate>,
    clock: Clock,
    bucket: Bucket,
    active: AtomicU32,
    per_client: Mutex<HashMap<IpAddr, u32>>,
}

/// Holds a connection's place until it closes.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    client: IpAddr,
    /// Counted in `per_client`.
    counted: bool,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let l = &self.limiter;
        l.active.fetch_sub(1, Ordering::AcqRel);
        if self.counted {
            let mut m = l.per_client.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.client);
                }
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(settings: ConnectionLimits) -> Self {
        Self {
            settings,
            rate: (settings.per_second > 0).then(|| {
                Rate::new(
                    settings.per_second,
                    Duration::from_secs(1),
                    settings.per_second,
                )
            }),
            clock: Clock::default(),
            bucket: Bucket::default(),
            active: AtomicU32::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a new connection from `client`, or the limit it is over.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnSlot, &'static str> {
        let s = self.settings;
        // Taken first and given back by the slot's drop on any refusal, so concurrent
        // accepts never overshoot.
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        let mut slot = ConnSlot {
            limiter: self.clone(),
            client,
            counted: false,
        };
        if s.max_connections > 0 && before >= s.max_connections {
            return Err("max-connections");
        }
        if s.max_connections_per_client > 0 {
            let mut m = self
                .per_client
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = m.entry(client).or_insert(0);
            if *n >= s.max_connections_per_client {
                return Err("max-connections-per-client");
            }
            *n += 1;
            slot.counted = true;
        }
        if let Some(rate) = &self.rate
            && !self.bucket.acquire(rate, self.clock.now_ns()).allowed
        {
            return Err("per-second");
        }
        Ok(slot)
    }

    /// Connections open now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn concurrent_limits_per_listener_and_per_client() {
        let l = Arc::new(ConnLimiter::new(ConnectionLimits {
            per_second: 0,
            max_connections: 3,
            max_connections_per_client: 2,
        }));
        let a1 = l.admit(ip(1)).expect("a1");
        let _a2 = l.admit(ip(1)).expect("a2");
        assert_eq!(l.admit(ip(1)).err(), Some("max-connections-per-client"));
        let _b1 = l.admit(ip(2)).expect("b1");
        assert_eq!(l.admit(ip(3)).err(), Some("max-connections"));
        drop(a1);
        assert_eq!(l.active(), 2);
        let _a3 = l.admit(ip(1)).expect("a slot came back");
        assert_eq!(l.admit(ip(4)).err(), Some("max-connections"));
    }

    #[tokio::test(start_paused = true)]
    async fn new_connections_per_second() {
        let l = Arc::new(ConnLimiter::new(ConnectionLimits {
            per_second: 5,
            max_connections: 0,
            max_connections_per_client: 0,
        }));
        let admitted = (0..20).filter(|_| l.admit(ip(1)).is_ok()).count();
        assert_eq!(admitted, 5);
        assert_eq!(l.active(), 0, "refused and closed connections hold nothing");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(l.admit(ip(1)).is_ok());
        assert!(l.admit(ip(1)).is_err());
    }
}
