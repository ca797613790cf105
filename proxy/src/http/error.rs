//! Errors the proxy answers itself, and the one place that maps them to responses: a status,
//! an `x-remora-error` reason a client or operator can act on, and a short text body.

use http::{HeaderValue, Response, StatusCode};
use remora_filters::breaker::Overflow;
use remora_filters::retry::grpc;
use remora_filters::router::NoRoute;
use remora_filters::timeout::RouteTimeout;

use crate::http::body::ProxyBody;
use crate::upstream::pool::ConnectError;

pub const ERROR_HEADER: &str = "x-remora-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    NoRoute(#[from] NoRoute),
    #[error("cluster {0:?} has no endpoints")]
    NoHealthyEndpoints(std::sync::Arc<str>),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("upstream reset the request: {0}")]
    UpstreamReset(crate::http::body::BoxError),
    #[error(transparent)]
    Timeout(#[from] RouteTimeout),
    #[error("per-try timeout of {0:?} elapsed before the response (no retry left)")]
    TryTimeout(std::time::Duration),
    #[error("cluster {0:?}: {1}")]
    Overflow(std::sync::Arc<str>, Overflow),
    #[error("listener {0:?} was removed; retry on a new connection")]
    ListenerGone(std::sync::Arc<str>),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("CONNECT is not supported: Remora proxies requests, not tunnels")]
    ConnectNotSupported,
    #[error("denied by authorization policy {0:?}")]
    Unauthorized(std::sync::Arc<str>),
    #[error("over the rate limit {:?}; retry in {}s", .0.policy, .0.retry_after_secs)]
    RateLimited(Box<crate::http::limit::Limited>),
    #[error("fault injected by the route's policy")]
    FaultAbort(remora_filters::fault::Abort),
}

impl ProxyError {
    /// The `x-remora-error` reason; also the `error` label of `remora_proxy_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute(_) => "no-route",
            ProxyError::NoHealthyEndpoints(_) => "no-healthy-endpoints",
            ProxyError::Connect(ConnectError::Timeout(..)) => "connect-timeout",
            ProxyError::Connect(ConnectError::Overflow(..)) | ProxyError::Overflow(..) => {
                "overflow"
            }
            ProxyError::Connect(ConnectError::Tls(..)) => "upstream-tls-failure",
            ProxyError::Connect(_) => "connect-failure",
            ProxyError::UpstreamReset(_) => "upstream-reset",
            ProxyError::Timeout(_) => "request-timeout",
            ProxyError::TryTimeout(_) => "per-try-timeout",
            ProxyError::ListenerGone(_) => "listener-draining",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::ConnectNotSupported => "connect-not-supported",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::RateLimited(_) => "rate-limited",
            ProxyError::FaultAbort(_) => "fault-injected",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyEndpoints(_)
            | ProxyError::Connect(_)
            | ProxyError::Overflow(..)
            | ProxyError::ListenerGone(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamReset(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) | ProxyError::TryTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ConnectNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::FaultAbort(a) => a.http_status,
        }
    }

    /// The gRPC status a gRPC client gets for this error.
    pub fn grpc_status(&self) -> u32 {
        match self {
            ProxyError::NoRoute(_) => grpc::UNIMPLEMENTED,
            ProxyError::Timeout(_) | ProxyError::TryTimeout(_) => grpc::DEADLINE_EXCEEDED,
            ProxyError::Overflow(..) | ProxyError::Connect(ConnectError::Overflow(..)) => {
                grpc::RESOURCE_EXHAUSTED
            }
            ProxyError::BadRequest(_) | ProxyError::ConnectNotSupported => grpc::INTERNAL,
            ProxyError::Unauthorized(_) => grpc::PERMISSION_DENIED,
            ProxyError::RateLimited(_) => grpc::RESOURCE_EXHAUSTED,
            ProxyError::FaultAbort(a) => a
                .grpc_status
                .unwrap_or_else(|| grpc::from_http_status(a.http_status.as_u16())),
            _ => grpc::UNAVAILABLE,
        }
    }

    /// A trailers-only gRPC answer (HTTP 200, `grpc-status` and `grpc-message` in the
    /// headers), as gRPC clients expect from a proxy; `x-remora-error` is set as for HTTP.
    pub fn into_grpc_response(self) -> Response<ProxyBody> {
        let mut rsp = Response::new(ProxyBody::empty());
        let h = rsp.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
        self.limit_headers(h);
        // grpc-message is percent-encoded; the reason and message are ASCII here.
        let msg: String = format!("{}: {self}", self.reason())
            .bytes()
            .map(|b| {
                if (0x20..0x7f).contains(&b) && b != b'%' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&msg) {
            h.insert("grpc-message", v);
        }
        rsp
    }

    /// `retry-after` and the IETF `ratelimit-policy` / `ratelimit` fields
    /// (draft-ietf-httpapi-ratelimit-headers) on a rate-limited answer.
    fn limit_headers(&self, h: &mut http::HeaderMap) {
        let ProxyError::RateLimited(l) = self else {
            return;
        };
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(l.retry_after_secs),
        );
        // Policy names are validated resource names: valid in a structured-field string.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            l.policy, l.quota, l.window_secs
        )) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("\"{}\";r=0;t={}", l.policy, l.retry_after_secs))
        {
            h.insert("ratelimit", v);
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut rsp = Response::new(ProxyBody::full(format!("{}: {self}\n", self.reason())));
        *rsp.status_mut() = self.status();
        let h = rsp.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        self.limit_headers(h);
        if matches!(self, ProxyError::ConnectNotSupported) {
            // RFC 9110 15.5.6: a 405 lists the methods that are allowed.
            h.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            );
        }
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        rsp
    }
}
