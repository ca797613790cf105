//! A route's rate limits and fault injection, as tower layers in front of the forward (rate
//! limit → fault → timeout → retry): limiters keep their buckets across configuration swaps
//! while their settings stay, count what they refuse, and answer 429 with the IETF
//! `ratelimit` headers; faults delay or abort a share of requests. The arithmetic is in
//! `remora-filters` (`ratelimit`, `fault`).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use remora_control_api::limits::{Fault, LimitKey, RateLimit};
use remora_filters::ratelimit::{Bucket, Clock, KeyedBuckets, Rate, Verdict};

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::metrics::{FaultLabels, Metrics, Name, RateLimitLabels};

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// The buckets of one limit (kept when only its numbers change).
#[derive(Debug)]
enum Buckets {
    Single(Bucket),
    Keyed(KeyedBuckets),
}

#[derive(Debug)]
pub struct Limiter {
    pub settings: RateLimit,
    pub route: Name,
    rate: Rate,
    clock: Clock,
    buckets: Arc<Buckets>,
    limited: Counter,
    shadowed: Counter,
}

/// What a refused request is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub policy: Arc<str>,
    /// `requests` per `interval`, as `ratelimit-policy: "NAME";q=QUOTA;w=WINDOW`.
    pub quota: u32,
    pub window_secs: u64,
    /// Seconds until a request can pass again (`retry-after` and `ratelimit: ...;t=`).
    pub retry_after_secs: u64,
}

impl Limiter {
    /// A limiter for `settings`; the buckets of `previous` are kept when its bucket
    /// arithmetic is the same (only `shadow` changed, say). A changed rate, burst, key or key
    /// cap starts with full buckets: a bucket's level means nothing under another rate.
    pub fn new(
        settings: &RateLimit,
        previous: Option<&Limiter>,
        route: &Name,
        metrics: &Metrics,
    ) -> Self {
        let rate = Rate::new(settings.requests, settings.interval, settings.burst);
        let reusable = previous.filter(|p| {
            let (a, b) = (&p.settings, settings);
            a.key == b.key
                && a.max_keys == b.max_keys
                && a.requests == b.requests
                && a.interval == b.interval
                && a.burst == b.burst
        });
        let (clock, buckets) = match reusable {
            Some(p) => (p.clock, p.buckets.clone()),
            None => (
                Clock::default(),
                Arc::new(match settings.key {
                    LimitKey::Route => Buckets::Single(Bucket::default()),
                    _ => Buckets::Keyed(KeyedBuckets::new(settings.max_keys as usize)),
                }),
            ),
        };
        let counter = |result| {
            metrics
                .rate_limited
                .get_or_create(&RateLimitLabels {
                    route: route.clone(),
                    limit: Name(settings.name.clone()),
                    result,
                })
                .clone()
        };
        Self {
            settings: settings.clone(),
            route: route.clone(),
            rate,
            clock,
            buckets,
            limited: counter("limited"),
            shadowed: counter("shadow"),
        }
    }

    /// Buckets held (1 for a whole-route limit).
    pub fn keys(&self) -> usize {
        match self.buckets.as_ref() {
            Buckets::Single(_) => 1,
            Buckets::Keyed(k) => k.len(),
        }
    }

    fn verdict<B>(&self, req: &Request<B>, caller: &Caller) -> Verdict {
        let now = self.clock.now_ns();
        match self.buckets.as_ref() {
            Buckets::Single(b) => b.acquire(&self.rate, now),
            Buckets::Keyed(k) => {
                let ip;
                let key: &[u8] = match &self.settings.key {
                    LimitKey::Header(h) => req.headers().get(h).map_or(&b""[..], |v| v.as_bytes()),
                    LimitKey::ClientAddress => {
                        ip = match caller.client {
                            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                            // One bucket per /64: a client owns a whole /64, and rotating
                            // addresses in it must not give it more buckets.
                            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                                Some(v4) => v4.to_ipv6_mapped().octets(),
                                None => {
                                    let mut o = ip.octets();
                                    o[8..].fill(0);
                                    o
                                }
                            },
                        };
                        &ip
                    }
                    LimitKey::PeerIdentity => {
                        caller.identity.as_deref().map_or(&b""[..], str::as_bytes)
                    }
                    LimitKey::Route => b"",
                };
                k.acquire(key, &self.rate, now)
            }
        }
    }

    fn limited(&self, v: &Verdict) -> Limited {
        let ceil = |d: std::time::Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        Limited {
            policy: self.settings.name.clone(),
            quota: self.settings.requests,
            window_secs: ceil(self.settings.interval).max(1),
            retry_after_secs: ceil(v.retry_after).max(1),
        }
    }
}

/// Who is asking, for keyed limits.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: IpAddr,
    pub identity: Option<Arc<str>>,
}

#[derive(Clone)]
pub struct RateLimitLayer {
    limiters: Arc<[Arc<Limiter>]>,
    caller: Caller,
}

impl RateLimitLayer {
    pub fn new(limiters: Arc<[Arc<Limiter>]>, caller: Caller) -> Self {
        Self { limiters, caller }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> tower::Service<Request<ProxyBody>> for RateLimitService<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> BoxFuture {
        for l in self.layer.limiters.iter() {
            let v = l.verdict(&req, &self.layer.caller);
            if v.allowed {
                continue;
            }
            if l.settings.shadow {
                l.shadowed.inc();
                continue;
            }
            l.limited.inc();
            let limited = l.limited(&v);
            return Box::pin(async move { Err(ProxyError::RateLimited(Box::new(limited))) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[derive(Clone, Debug)]
pub struct FaultLayer {
    fault: Arc<Fault>,
    aborted: Counter,
    delayed: Counter,
}

impl FaultLayer {
    pub fn new(fault: &Fault, route: &Name, metrics: &Metrics) -> Self {
        let counter = |kind| {
            metrics
                .faults
                .get_or_create(&FaultLabels {
                    route: route.clone(),
                    kind,
                })
                .clone()
        };
        Self {
            fault: Arc::new(fault.clone()),
            aborted: counter("abort"),
            delayed: counter("delay"),
        }
    }
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct FaultService<S> {
    inner: S,
    layer: FaultLayer,
}

impl<S> tower::Service<Request<ProxyBody>> for FaultService<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> BoxFuture {
        let injection = remora_filters::fault::decide(&self.layer.fault, req.headers(), || {
            fastrand::f64() * 100.0
        });
        if injection.delay.is_some() {
            self.layer.delayed.inc();
        }
        if injection.abort.is_some() {
            self.layer.aborted.inc();
        }
        match injection {
            remora_filters::fault::Injection {
                delay: None,
                abort: None,
            } => Box::pin(self.inner.call(req)),
            remora_filters::fault::Injection {
                delay,
                abort: Some(abort),
            } => Box::pin(async move {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                Err(ProxyError::FaultAbort(abort))
            }),
            remora_filters::fault::Injection {
                delay: Some(d),
                abort: None,
            } => {
                // The inner call (and the route timeout) starts after the delay.
                let mut inner = self.inner.clone();
                Box::pin(async move {
                    tokio::time::sleep(d).await;
                    inner.call(req).await
                })
            }
        }
    }
}

/// A route's limiters and fault, compiled once per configuration.
#[derive(Debug)]
pub struct RoutePolicy {
    pub limiters: Arc<[Arc<Limiter>]>,
    pub fault: Option<FaultLayer>,
}
