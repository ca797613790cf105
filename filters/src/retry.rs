//! Retry decisions: is a finished try worth another (by the route's `retryOn`), may this
//! request be retried at all (method, body), and how long to wait first (exponential
//! backoff with full jitter).

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use remora_control_api::resilience::{RetryOn, RetryPolicy};

/// Sent upstream on every try: 1 for the first, 2 for the first retry, and so on.
pub const ATTEMPT_HEADER: &str = "x-remora-attempt";

/// How one try ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived. `grpc` is the `grpc-status` carried in the headers
    /// (a trailers-only gRPC answer), if any.
    Response {
        status: StatusCode,
        grpc: Option<u32>,
    },
    /// No connection could be had.
    ConnectFailure,
    /// The connection or stream broke before response headers.
    Reset,
    /// The per-try timeout fired before response headers.
    TryTimeout,
}

/// Why a try is retried: the `reason` label of `remora_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryReason {
    Status5xx,
    GatewayError,
    ConnectFailure,
    Reset,
    RetriableStatus,
    TryTimeout,
    GrpcCancelled,
    GrpcDeadlineExceeded,
    GrpcResourceExhausted,
    GrpcUnavailable,
    /// A hedged second try (not a failure).
    Hedge,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Status5xx => "5xx",
            RetryReason::GatewayError => "gateway-error",
            RetryReason::ConnectFailure => "connect-failure",
            RetryReason::Reset => "reset",
            RetryReason::RetriableStatus => "retriable-status-code",
            RetryReason::TryTimeout => "per-try-timeout",
            RetryReason::GrpcCancelled => "cancelled",
            RetryReason::GrpcDeadlineExceeded => "deadline-exceeded",
            RetryReason::GrpcResourceExhausted => "resource-exhausted",
            RetryReason::GrpcUnavailable => "unavailable",
            RetryReason::Hedge => "hedge",
        }
    }
}

/// gRPC status codes (grpc/doc/statuscodes.md).
pub mod grpc {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNKNOWN: u32 = 2;
    pub const UNAUTHENTICATED: u32 = 16;

    /// The gRPC code for an HTTP status, as gRPC clients map a non-gRPC answer
    /// (grpc/doc/http-grpc-status-mapping.md).
    pub fn from_http_status(status: u16) -> u32 {
        match status {
            400 => INTERNAL,
            401 => UNAUTHENTICATED,
            403 => PERMISSION_DENIED,
            404 => UNIMPLEMENTED,
            429 | 502 | 503 | 504 => UNAVAILABLE,
            _ => UNKNOWN,
        }
    }
}

/// The `grpc-status` of a response's headers, when it is a gRPC answer that has one.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

fn is_gateway(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// The reason to retry `outcome` under `on` (and `codes` for "retriable-status-codes"), or
/// `None` when the outcome stands.
pub fn classify(on: &RetryOn, codes: &[u16], outcome: Outcome) -> Option<RetryReason> {
    match outcome {
        Outcome::ConnectFailure => {
            if on.connect_failure {
                Some(RetryReason::ConnectFailure)
            } else if on.gateway_error || on.status_5xx {
                // The proxy answers a failed connect with 503: a gateway error.
                Some(RetryReason::GatewayError)
            } else {
                None
            }
        }
        Outcome::Reset => {
            (on.reset || on.gateway_error || on.status_5xx).then_some(RetryReason::Reset)
        }
        Outcome::TryTimeout => {
            (on.reset || on.gateway_error || on.status_5xx).then_some(RetryReason::TryTimeout)
        }
        Outcome::Response { status, grpc } => {
            if let Some(code) = grpc {
                let reason = match code {
                    grpc::CANCELLED if on.grpc_cancelled => Some(RetryReason::GrpcCancelled),
                    grpc::DEADLINE_EXCEEDED if on.grpc_deadline_exceeded => {
                        Some(RetryReason::GrpcDeadlineExceeded)
                    }
                    grpc::RESOURCE_EXHAUSTED if on.grpc_resource_exhausted => {
                        Some(RetryReason::GrpcResourceExhausted)
                    }
                    grpc::UNAVAILABLE if on.grpc_unavailable => Some(RetryReason::GrpcUnavailable),
                    _ => None,
                };
                if reason.is_some() {
                    return reason;
                }
            }
            if on.retriable_status_codes && codes.contains(&status.as_u16()) {
                Some(RetryReason::RetriableStatus)
            } else if on.gateway_error && is_gateway(status) {
                Some(RetryReason::GatewayError)
            } else if on.status_5xx && status.is_server_error() {
                Some(RetryReason::Status5xx)
            } else {
                None
            }
        }
    }
}

/// Methods that may be sent twice without changing the outcome (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the policy lets this method be retried at all. gRPC calls are POSTs; they are
/// retried only on conditions where the call cannot have run (connect failure, reset before
/// headers, and the statuses the policy names), so their method is not held against them.
pub fn method_allowed(policy: &RetryPolicy, method: &Method, is_grpc: bool) -> bool {
    policy.retry_non_idempotent || is_grpc || is_idempotent(method)
}

/// Backoff before retry number `retry` (1 for the first retry): a uniform draw from zero to
/// `min(max, base × 2^(retry-1))` ("full jitter").
pub fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exp).min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(status: u16) -> Outcome {
        Outcome::Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            grpc: None,
        }
    }

    fn grpc_rsp(code: u32) -> Outcome {
        Outcome::Response {
            status: StatusCode::OK,
            grpc: Some(code),
        }
    }

    #[test]
    fn default_conditions_retry_gateway_errors_and_unavailable_only() {
        let on = RetryOn::DEFAULT;
        assert_eq!(
            classify(&on, &[], rsp(503)),
            Some(RetryReason::GatewayError)
        );
        assert_eq!(classify(&on, &[], rsp(500)), None);
        assert_eq!(classify(&on, &[], rsp(404)), None);
        assert_eq!(classify(&on, &[], rsp(200)), None);
        assert_eq!(
            classify(&on, &[], Outcome::ConnectFailure),
            Some(RetryReason::ConnectFailure)
        );
        assert_eq!(classify(&on, &[], Outcome::Reset), Some(RetryReason::Reset));
        assert_eq!(
            classify(&on, &[], Outcome::TryTimeout),
            Some(RetryReason::TryTimeout)
        );
        assert_eq!(
            classify(&on, &[], grpc_rsp(grpc::UNAVAILABLE)),
            Some(RetryReason::GrpcUnavailable)
        );
        assert_eq!(classify(&on, &[], grpc_rsp(grpc::INVALID_ARGUMENT)), None);
        assert_eq!(classify(&on, &[], grpc_rsp(grpc::OK)), None);
    }

    #[test]
    fn each_condition_alone() {
        let only = |f: fn(&mut RetryOn)| {
            let mut on = RetryOn::default();
            f(&mut on);
            on
        };
        let five = only(|o| o.status_5xx = true);
        assert_eq!(classify(&five, &[], rsp(500)), Some(RetryReason::Status5xx));
        assert_eq!(classify(&five, &[], rsp(503)), Some(RetryReason::Status5xx));
        assert_eq!(classify(&five, &[], rsp(429)), None);
        let codes = only(|o| o.retriable_status_codes = true);
        assert_eq!(
            classify(&codes, &[409, 429], rsp(429)),
            Some(RetryReason::RetriableStatus)
        );
        assert_eq!(classify(&codes, &[409, 429], rsp(503)), None);
        let connect = only(|o| o.connect_failure = true);
        assert_eq!(classify(&connect, &[], rsp(503)), None);
        assert_eq!(classify(&connect, &[], Outcome::Reset), None);
        for (f, code, reason) in [
            (
                (|o: &mut RetryOn| o.grpc_cancelled = true) as fn(&mut RetryOn),
                grpc::CANCELLED,
                RetryReason::GrpcCancelled,
            ),
            (
                |o| o.grpc_deadline_exceeded = true,
                grpc::DEADLINE_EXCEEDED,
                RetryReason::GrpcDeadlineExceeded,
            ),
            (
                |o| o.grpc_resource_exhausted = true,
                grpc::RESOURCE_EXHAUSTED,
                RetryReason::GrpcResourceExhausted,
            ),
        ] {
            let on = only(f);
            assert_eq!(classify(&on, &[], grpc_rsp(code)), Some(reason));
            assert_eq!(classify(&on, &[], grpc_rsp(grpc::UNAVAILABLE)), None);
        }
        let none = RetryOn::default();
        for o in [
            rsp(503),
            Outcome::Reset,
            Outcome::ConnectFailure,
            Outcome::TryTimeout,
        ] {
            assert_eq!(classify(&none, &[], o), None, "{o:?}");
        }
    }

    #[test]
    fn grpc_status_is_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_cap() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        for retry in 1..=8u32 {
            let ceiling = (base * 2u32.pow(retry - 1)).min(max);
            let draws: Vec<Duration> = (0..2000).map(|_| backoff(base, max, retry)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter: draws spread over the whole range, not clustered at the top.
            let low = draws.iter().filter(|d| **d < ceiling / 4).count();
            let high = draws.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!((300..700).contains(&low), "retry {retry}: {low} low");
            assert!((300..700).contains(&high), "retry {retry}: {high} high");
        }
        assert_eq!(backoff(Duration::ZERO, Duration::ZERO, 3), Duration::ZERO);
        assert!(backoff(base, max, u32::MAX) <= max);
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
