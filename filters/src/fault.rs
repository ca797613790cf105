//! Fault injection decisions: whether a request is delayed and whether it is aborted (and
//! with what), from the route's percentages or, when the route allows it, from request
//! headers (`x-remora-fault-delay: MS`, `x-remora-fault-abort: STATUS`,
//! `x-remora-fault-abort-grpc: CODE`).

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use remora_control_api::limits::Fault;

pub const DELAY_HEADER: &str = "x-remora-fault-delay";
pub const ABORT_HEADER: &str = "x-remora-fault-abort";
pub const ABORT_GRPC_HEADER: &str = "x-remora-fault-abort-grpc";

/// Longest delay a header may ask for.
pub const MAX_HEADER_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    pub http_status: StatusCode,
    pub grpc_status: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injection {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
}

fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Decides for one request; `roll()` gives a uniform number in [0, 100).
pub fn decide(fault: &Fault, headers: &HeaderMap, mut roll: impl FnMut() -> f64) -> Injection {
    let mut out = Injection::default();
    if let Some(d) = &fault.delay
        && d.percent > 0.0
        && roll() < d.percent
    {
        out.delay = Some(d.delay);
    }
    if let Some(a) = &fault.abort
        && a.percent > 0.0
        && roll() < a.percent
    {
        out.abort = Some(Abort {
            http_status: a.http_status,
            grpc_status: a.grpc_status,
        });
    }
    if fault.allow_header_faults {
        if let Some(ms) = header::<u64>(headers, DELAY_HEADER) {
            out.delay = Some(Duration::from_millis(ms).min(MAX_HEADER_DELAY));
        }
        let status = header::<u16>(headers, ABORT_HEADER)
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| (200..=599).contains(&s.as_u16()));
        let grpc = header::<u32>(headers, ABORT_GRPC_HEADER).filter(|c| (1..=16).contains(c));
        if status.is_some() || grpc.is_some() {
            out.abort = Some(Abort {
                http_status: status.unwrap_or(StatusCode::OK),
                grpc_status: grpc,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_control_api::limits::{FaultAbort, FaultDelay};

    fn fault(abort: f64, delay: f64, headers: bool) -> Fault {
        Fault {
            abort: Some(FaultAbort {
                percent: abort,
                http_status: StatusCode::SERVICE_UNAVAILABLE,
                grpc_status: None,
            }),
            delay: Some(FaultDelay {
                percent: delay,
                delay: Duration::from_millis(100),
            }),
            allow_header_faults: headers,
        }
    }

    #[test]
    fn percentages_hold_over_many_requests() {
        let f = fault(30.0, 10.0, false);
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut aborted, mut delayed) = (0, 0);
        for _ in 0..100_000 {
            let i = decide(&f, &HeaderMap::new(), || rng.f64() * 100.0);
            aborted += usize::from(i.abort.is_some());
            delayed += usize::from(i.delay.is_some());
        }
        assert!((29_000..31_000).contains(&aborted), "{aborted}");
        assert!((9_500..10_500).contains(&delayed), "{delayed}");
        let none = fault(0.0, 0.0, false);
        assert_eq!(
            decide(&none, &HeaderMap::new(), || 0.0),
            Injection::default()
        );
    }

    #[test]
    fn headers_apply_only_when_allowed_and_are_bounded() {
        let mut h = HeaderMap::new();
        h.insert(ABORT_HEADER, http::HeaderValue::from_static("429"));
        h.insert(DELAY_HEADER, http::HeaderValue::from_static("999999"));
        let off = decide(&fault(0.0, 0.0, false), &h, || 50.0);
        assert_eq!(off, Injection::default());
        let on = decide(&fault(0.0, 0.0, true), &h, || 50.0);
        assert_eq!(
            on.abort.map(|a| a.http_status),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(on.delay, Some(MAX_HEADER_DELAY));
        let mut bad = HeaderMap::new();
        bad.insert(ABORT_HEADER, http::HeaderValue::from_static("42"));
        bad.insert(ABORT_GRPC_HEADER, http::HeaderValue::from_static("99"));
        assert_eq!(
            decide(&fault(0.0, 0.0, true), &bad, || 50.0),
            Injection::default()
        );
    }
}
