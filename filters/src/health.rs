//! Active health-check state of one endpoint: `unhealthy_threshold` failed checks in a row
//! take it out of the balancer, `healthy_threshold` passed ones bring it back. Endpoints
//! start healthy, so applying a configuration never black-holes traffic while the first
//! checks run.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use remora_control_api::resilience::HealthCheck;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameUnhealthy,
    BecameHealthy,
}

#[derive(Debug)]
pub struct EndpointHealth {
    healthy: AtomicBool,
    /// Checks in a row that disagree with the current state.
    streak: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

impl EndpointHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records one check (only the endpoint's checker calls this, so no race between the
    /// streak and the state).
    pub fn record(&self, passed: bool, cfg: &HealthCheck) -> Option<Transition> {
        let healthy = self.is_healthy();
        if passed == healthy {
            self.streak.store(0, Ordering::Release);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::AcqRel) + 1;
        let needed = if healthy {
            cfg.unhealthy_threshold
        } else {
            cfg.healthy_threshold
        };
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Release);
        self.healthy.store(passed, Ordering::Release);
        Some(if passed {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }

    /// Back to healthy (health checking was turned off for the cluster).
    pub fn reset(&self) {
        self.healthy.store(true, Ordering::Release);
        self.streak.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_control_api::resilience::HealthCheckKind;
    use std::time::Duration;

    fn cfg() -> HealthCheck {
        HealthCheck {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn thresholds_count_checks_in_a_row() {
        let (h, c) = (EndpointHealth::default(), cfg());
        assert!(h.is_healthy());
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        // A pass in between starts the count again.
        assert_eq!(h.record(true, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), Some(Transition::BecameUnhealthy));
        assert!(!h.is_healthy());
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(true, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(true, &c), None);
        assert_eq!(h.record(true, &c), Some(Transition::BecameHealthy));
        assert!(h.is_healthy());
    }

    #[test]
    fn thresholds_of_one_flip_at_once() {
        let c = HealthCheck {
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            ..cfg()
        };
        let h = EndpointHealth::default();
        assert_eq!(h.record(false, &c), Some(Transition::BecameUnhealthy));
        assert_eq!(h.record(true, &c), Some(Transition::BecameHealthy));
        h.record(false, &c);
        h.reset();
        assert!(h.is_healthy());
    }
}
