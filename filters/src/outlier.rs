//! Outlier detection (passive health): each endpoint counts consecutive 5xx and gateway
//! errors and its success rate over an interval; past a threshold it is ejected from its
//! cluster's balancer for `base × multiplier` (the multiplier grows with each ejection and
//! decays by one per interval spent in service), capped at `max_ejection_time`. A cluster
//! never has more than `max_ejection_percent` of its endpoints ejected (though one of two or
//! more may always go). An endpoint whose time is up returns on probation: its next result
//! decides (a failure ejects it again at once, a success clears it).
//!
//! Recording a result touches only atomics unless it changes state; ejection and return
//! take the endpoint's lock. Times are `tokio::time::Instant`s so tests run on paused time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use remora_control_api::resilience::OutlierDetection;
use tokio::time::Instant;

/// A try's result as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Success,
    /// 500, 501, 505 and other 5xx that are not gateway errors.
    ServerError,
    /// 502, 503, 504, a failed connect or a reset.
    GatewayError,
}

impl Observed {
    pub fn from_status(status: u16) -> Self {
        match status {
            502..=504 => Observed::GatewayError,
            500..=599 => Observed::ServerError,
            _ => Observed::Success,
        }
    }
}

/// Why an endpoint was ejected: the `reason` label of `remora_outlier_ejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
    SuccessRate,
    /// Failed its first request after returning.
    FailedProbe,
}

impl EjectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive-5xx",
            EjectReason::ConsecutiveGatewayErrors => "consecutive-gateway-errors",
            EjectReason::SuccessRate => "success-rate",
            EjectReason::FailedProbe => "failed-probe",
        }
    }
}

/// A state change worth a metric and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Ejected {
        reason: EjectReason,
        for_: Duration,
    },
    /// An ejection was due but the cluster's cap allowed no more.
    EjectionCapped {
        reason: EjectReason,
    },
    Returned,
}

/// The cluster-wide count of ejected endpoints (for the cap). Survives configuration swaps.
#[derive(Debug, Default)]
pub struct ClusterOutliers {
    ejected: AtomicUsize,
}

impl ClusterOutliers {
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// Reserves one ejection slot if the cap allows it for a cluster of `total` endpoints.
    fn reserve(&self, cfg: &OutlierDetection, total: usize) -> bool {
        let max_percent = cfg.max_ejection_percent as usize;
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                let within_cap = (n + 1) * 100 <= max_percent * total;
                let first_of_several = n == 0 && total >= 2 && max_percent > 0;
                (n < total && (within_cap || first_of_several)).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[derive(Debug)]
struct State {
    /// Set while ejected.
    until: Option<Instant>,
    multiplier: u32,
    /// Back in service, awaiting the result of its first request.
    probing: bool,
    /// Start of the current success-rate interval.
    interval_start: Instant,
}

/// One endpoint's outlier state. Lives as long as the endpoint stays in its cluster.
#[derive(Debug)]
pub struct EndpointOutlier {
    ejected: AtomicBool,
    probing: AtomicBool,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    successes: AtomicU32,
    total: AtomicU32,
    state: Mutex<State>,
}

impl Default for EndpointOutlier {
    fn default() -> Self {
        Self {
            ejected: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            total: AtomicU32::new(0),
            state: Mutex::new(State {
                until: None,
                multiplier: 0,
                probing: false,
                interval_start: Instant::now(),
            }),
        }
    }
}

impl EndpointOutlier {
    /// Out of the balancer now (a read of one atomic).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Ejections in a row that set the current ejection time (for `/clusters`).
    pub fn multiplier(&self) -> u32 {
        self.lock().multiplier
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one try's result; returns an event when the endpoint changed state. `now` is
    /// read only when it does (no clock read on the common path).
    pub fn record(
        &self,
        cluster: &ClusterOutliers,
        cfg: &OutlierDetection,
        total_endpoints: usize,
        result: Observed,
        now: impl FnOnce() -> Instant,
    ) -> Option<Event> {
        let rate = cfg.success_rate_threshold.is_some();
        if rate {
            self.total.fetch_add(1, Ordering::AcqRel);
        }
        if result == Observed::Success {
            if rate {
                self.successes.fetch_add(1, Ordering::AcqRel);
            }
            // Stores only when there is something to clear: no shared-line writes on the
            // common path.
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Release);
            }
            if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                self.consecutive_gateway.store(0, Ordering::Release);
            }
            if self.probing.load(Ordering::Acquire) {
                self.probing.store(false, Ordering::Release);
                self.lock().probing = false;
            }
            return None;
        }
        if self.is_ejected() {
            // Late results of requests sent before the ejection.
            return None;
        }
        let fives = self.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
        let gateway = if result == Observed::GatewayError {
            self.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                self.consecutive_gateway.store(0, Ordering::Release);
            }
            0
        };
        let reason = if self.probing.load(Ordering::Acquire) {
            EjectReason::FailedProbe
        } else if cfg.consecutive_gateway_errors > 0 && gateway >= cfg.consecutive_gateway_errors {
            EjectReason::ConsecutiveGatewayErrors
        } else if cfg.consecutive_5xx > 0 && fives >= cfg.consecutive_5xx {
            EjectReason::Consecutive5xx
        } else {
            return None;
        };
        self.eject(cluster, cfg, total_endpoints, reason, now())
    }

    fn eject(
        &self,
        cluster: &ClusterOutliers,
        cfg: &OutlierDetection,
        total_endpoints: usize,
        reason: EjectReason,
        now: Instant,
    ) -> Option<Event> {
        let mut s = self.lock();
        if s.until.is_some() {
            return None;
        }
        if !cluster.reserve(cfg, total_endpoints) {
            // Start counting afresh so the cap is not asked again on every failure.
            self.consecutive_5xx.store(0, Ordering::Release);
            self.consecutive_gateway.store(0, Ordering::Release);
            return Some(Event::EjectionCapped { reason });
        }
        s.multiplier = s.multiplier.saturating_add(1);
        let for_ = cfg
            .base_ejection_time
            .saturating_mul(s.multiplier)
            .min(cfg.max_ejection_time);
        s.until = Some(now + for_);
        s.probing = false;
        self.probing.store(false, Ordering::Release);
        self.ejected.store(true, Ordering::Release);
        self.consecutive_5xx.store(0, Ordering::Release);
        self.consecutive_gateway.store(0, Ordering::Release);
        Some(Event::Ejected { reason, for_ })
    }

    /// Periodic work (a few times a second): return an endpoint whose time is up, judge
    /// the success rate once per interval, and decay the multiplier of endpoints in service.
    pub fn tick(
        &self,
        cluster: &ClusterOutliers,
        cfg: &OutlierDetection,
        total_endpoints: usize,
        now: Instant,
    ) -> Option<Event> {
        let mut s = self.lock();
        if let Some(until) = s.until {
            if now < until {
                return None;
            }
            s.until = None;
            s.probing = true;
            s.interval_start = now;
            self.successes.store(0, Ordering::Release);
            self.total.store(0, Ordering::Release);
            self.probing.store(true, Ordering::Release);
            self.ejected.store(false, Ordering::Release);
            cluster.release();
            return Some(Event::Returned);
        }
        if now.duration_since(s.interval_start) < cfg.interval {
            return None;
        }
        s.interval_start = now;
        let total = self.total.swap(0, Ordering::AcqRel);
        let ok = self.successes.swap(0, Ordering::AcqRel);
        let poor = cfg.success_rate_threshold.is_some_and(|t| {
            total >= cfg.success_rate_min_requests && f64::from(ok) < t * f64::from(total)
        });
        if poor {
            drop(s);
            return self.eject(cluster, cfg, total_endpoints, EjectReason::SuccessRate, now);
        }
        if !s.probing {
            s.multiplier = s.multiplier.saturating_sub(1);
        }
        None
    }

    /// Puts the endpoint back in service at once (outlier detection turned off, or the
    /// endpoint left its cluster), releasing its slot of the cap.
    pub fn reset(&self, cluster: &ClusterOutliers) {
        let mut s = self.lock();
        if s.until.take().is_some() {
            cluster.release();
        }
        s.probing = false;
        s.multiplier = 0;
        self.ejected.store(false, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection::default()
    }

    fn fail_n(
        e: &EndpointOutlier,
        c: &ClusterOutliers,
        cfg: &OutlierDetection,
        n: u32,
        r: Observed,
    ) -> Vec<Event> {
        (0..n)
            .filter_map(|_| e.record(c, cfg, 10, r, Instant::now))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_thresholds_count_in_a_row() {
        let (e, c, cfg) = (
            EndpointOutlier::default(),
            ClusterOutliers::default(),
            cfg(),
        );
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(e.record(&c, &cfg, 10, Observed::ServerError, || now), None);
        }
        // A success in between starts the count again.
        assert_eq!(e.record(&c, &cfg, 10, Observed::Success, || now), None);
        for _ in 0..4 {
            assert_eq!(e.record(&c, &cfg, 10, Observed::ServerError, || now), None);
        }
        assert_eq!(
            e.record(&c, &cfg, 10, Observed::ServerError, || now),
            Some(Event::Ejected {
                reason: EjectReason::Consecutive5xx,
                for_: Duration::from_secs(30)
            })
        );
        assert!(e.is_ejected());
        assert_eq!(c.ejected(), 1);
        // Gateway errors count as 5xx too, but have their own reason when they come first.
        let g = EndpointOutlier::default();
        let events = fail_n(&g, &c, &cfg, 5, Observed::GatewayError);
        assert_eq!(
            events,
            vec![Event::Ejected {
                reason: EjectReason::ConsecutiveGatewayErrors,
                for_: Duration::from_secs(30)
            }]
        );
        // A threshold of 0 is off.
        let off = OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            ..cfg
        };
        let o = EndpointOutlier::default();
        assert!(fail_n(&o, &c, &off, 100, Observed::GatewayError).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_and_decays() {
        let (e, c, cfg) = (
            EndpointOutlier::default(),
            ClusterOutliers::default(),
            cfg(),
        );
        let mut times = Vec::new();
        for _ in 0..12 {
            let events = fail_n(&e, &c, &cfg, 5, Observed::ServerError);
            match events.as_slice() {
                [Event::Ejected { for_, .. }] => times.push(*for_),
                other => panic!("expected one ejection, got {other:?}"),
            }
            // Wait it out, then fail the probe's way: the next ejections are probes failing,
            // so return and serve successfully once to clear probation first.
            let until = e.lock().until.unwrap_or_else(Instant::now);
            tokio::time::advance(until - Instant::now()).await;
            assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), Some(Event::Returned));
            assert!(!e.is_ejected());
            assert_eq!(
                e.record(&c, &cfg, 10, Observed::Success, Instant::now),
                None
            );
        }
        let secs: Vec<u64> = times.iter().map(Duration::as_secs).collect();
        assert_eq!(
            secs,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        assert_eq!(c.ejected(), 0);
        // In service, the multiplier decays by one per interval.
        let m = e.multiplier();
        assert_eq!(m, 12);
        for _ in 0..5 {
            tokio::time::advance(cfg.interval).await;
            assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), None);
        }
        assert_eq!(e.multiplier(), 7);
        let events = fail_n(&e, &c, &cfg, 5, Observed::ServerError);
        assert_eq!(
            events,
            vec![Event::Ejected {
                reason: EjectReason::Consecutive5xx,
                for_: Duration::from_secs(240)
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_returned_endpoint_is_probed() {
        let (e, c, cfg) = (
            EndpointOutlier::default(),
            ClusterOutliers::default(),
            cfg(),
        );
        fail_n(&e, &c, &cfg, 5, Observed::GatewayError);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), None);
        assert!(e.is_ejected());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), Some(Event::Returned));
        // One failure on probation is enough.
        assert_eq!(
            e.record(&c, &cfg, 10, Observed::ServerError, Instant::now),
            Some(Event::Ejected {
                reason: EjectReason::FailedProbe,
                for_: Duration::from_secs(60)
            })
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), Some(Event::Returned));
        assert_eq!(
            e.record(&c, &cfg, 10, Observed::Success, Instant::now),
            None
        );
        // Off probation: one failure is just one failure.
        assert_eq!(
            e.record(&c, &cfg, 10, Observed::ServerError, Instant::now),
            None
        );
        assert!(!e.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_ejections_per_cluster() {
        let cfg = cfg(); // 50%
        let c = ClusterOutliers::default();
        let eps: Vec<EndpointOutlier> = (0..10).map(|_| EndpointOutlier::default()).collect();
        let mut capped = 0;
        for e in &eps {
            for ev in fail_n(e, &c, &cfg, 5, Observed::GatewayError) {
                if matches!(ev, Event::EjectionCapped { .. }) {
                    capped += 1;
                }
            }
        }
        assert_eq!(c.ejected(), 5);
        assert_eq!(eps.iter().filter(|e| e.is_ejected()).count(), 5);
        assert_eq!(capped, 5);
        // 10% of 3 endpoints is below one, yet one of several may always be ejected; never two.
        let ten = OutlierDetection {
            max_ejection_percent: 10,
            ..cfg
        };
        let c = ClusterOutliers::default();
        let three: Vec<EndpointOutlier> = (0..3).map(|_| EndpointOutlier::default()).collect();
        for e in &three {
            for _ in 0..5 {
                e.record(&c, &ten, 3, Observed::GatewayError, Instant::now);
            }
        }
        assert_eq!(three.iter().filter(|e| e.is_ejected()).count(), 1);
        // A lone endpoint is never ejected (there is nowhere else to send), nor with 0%.
        let c = ClusterOutliers::default();
        let lone = EndpointOutlier::default();
        for _ in 0..50 {
            lone.record(&c, &cfg, 1, Observed::GatewayError, Instant::now);
        }
        assert!(!lone.is_ejected());
        let zero = OutlierDetection {
            max_ejection_percent: 0,
            ..cfg
        };
        let c = ClusterOutliers::default();
        let e = EndpointOutlier::default();
        fail_n(&e, &c, &zero, 5, Observed::GatewayError);
        assert!(!e.is_ejected());
        // 100% lets every endpoint go.
        let all = OutlierDetection {
            max_ejection_percent: 100,
            ..cfg
        };
        let c = ClusterOutliers::default();
        for e in &three {
            e.reset(&ClusterOutliers::default());
            fail_n(e, &c, &all, 5, Observed::GatewayError);
        }
        assert_eq!(c.ejected(), 3);
        // A return releases the slot.
        tokio::time::advance(Duration::from_secs(30)).await;
        for e in &three {
            assert_eq!(e.tick(&c, &all, 3, Instant::now()), Some(Event::Returned));
        }
        assert_eq!(c.ejected(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn success_rate_is_judged_per_interval() {
        let cfg = OutlierDetection {
            success_rate_threshold: Some(0.8),
            success_rate_min_requests: 100,
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            ..cfg()
        };
        let c = ClusterOutliers::default();
        let e = EndpointOutlier::default();
        // 75% success, but too few requests to judge.
        for i in 0..80 {
            let r = if i % 4 == 0 {
                Observed::ServerError
            } else {
                Observed::Success
            };
            e.record(&c, &cfg, 10, r, Instant::now);
        }
        tokio::time::advance(cfg.interval).await;
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), None);
        // 85%: fine.
        for i in 0..200 {
            let r = if i % 20 < 3 {
                Observed::ServerError
            } else {
                Observed::Success
            };
            e.record(&c, &cfg, 10, r, Instant::now);
        }
        tokio::time::advance(cfg.interval).await;
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), None);
        // 75% over 200: ejected at the end of the interval, not before.
        for i in 0..200 {
            let r = if i % 4 == 0 {
                Observed::ServerError
            } else {
                Observed::Success
            };
            e.record(&c, &cfg, 10, r, Instant::now);
        }
        assert_eq!(e.tick(&c, &cfg, 10, Instant::now()), None);
        tokio::time::advance(cfg.interval).await;
        assert_eq!(
            e.tick(&c, &cfg, 10, Instant::now()),
            Some(Event::Ejected {
                reason: EjectReason::SuccessRate,
                for_: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn statuses_map_to_observations() {
        assert_eq!(Observed::from_status(200), Observed::Success);
        assert_eq!(Observed::from_status(404), Observed::Success);
        assert_eq!(Observed::from_status(500), Observed::ServerError);
        assert_eq!(Observed::from_status(503), Observed::GatewayError);
    }
}
