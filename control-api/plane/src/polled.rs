//! Sources that ask an HTTP registry (Consul, Eureka): one task per watched service, a
//! blocking query or a refresh interval between answers (never a hot loop), capped jittered
//! backoff on errors, and the one last-known-good rule of every source: an error, or an
//! empty answer after a non-empty one, keeps the last known endpoints for the service's
//! grace period (the service shows as stale) before they are given up.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use prometheus_client::metrics::gauge::Gauge;
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::discovery::{Source, SourceStatus};
use crate::metrics::{Metrics, ServiceLabels};
use crate::model::Model;

pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest registry answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One registry answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub endpoints: Vec<Endpoint>,
    /// The blocking-query index to pass next (Consul's `X-Consul-Index`).
    pub index: Option<String>,
}

/// What a registry knows how to ask.
pub trait Registry: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// The watch key of `service`, when its endpoints come from this registry.
    fn key(&self, service: &Service) -> Option<String>;
    /// One query. `index` is the previous answer's (None the first time): a blocking
    /// registry waits for a change, a polled one for its refresh interval.
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>>;
    /// The least time between two queries of one key (whatever the registry answers).
    fn min_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

struct Watch {
    last: Vec<Endpoint>,
    grace: Duration,
    /// Since when the last known endpoints are kept despite the registry, and why.
    stale: Option<(Instant, String)>,
    task: AbortHandle,
    gauge: Gauge,
}

/// A [`Source`] over a [`Registry`].
pub struct PolledSource<R: Registry> {
    registry: Arc<R>,
    watches: Arc<Mutex<HashMap<String, Watch>>>,
    changed: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
}

impl<R: Registry> PolledSource<R> {
    pub fn new(registry: R, changed: mpsc::Sender<()>, metrics: Arc<Metrics>) -> Self {
        Self {
            registry: Arc::new(registry),
            watches: Arc::new(Mutex::new(HashMap::new())),
            changed,
            metrics,
        }
    }
}

fn grace_of(s: &Service) -> Duration {
    s.grace_period.as_ref().map_or(DEFAULT_GRACE, |d| {
        Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        )
    })
}

impl<R: Registry> Source for PolledSource<R> {
    fn kind(&self) -> &'static str {
        self.registry.kind()
    }

    fn serves(&self, service: &Service) -> bool {
        self.registry.key(service).is_some()
    }

    fn endpoints(&self, service: &Service) -> Vec<Endpoint> {
        let Some(k) = self.registry.key(service) else {
            return Vec::new();
        };
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&k)
            .map(|w| w.last.clone())
            .unwrap_or_default()
    }

    fn status(&self, service: &Service) -> Option<SourceStatus> {
        let k = self.registry.key(service)?;
        let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let w = watches.get(&k)?;
        Some(SourceStatus {
            source: self.registry.kind(),
            stale: w.stale.as_ref().map(|(since, why)| {
                format!(
                    "keeping the last {} endpoints for {}s of {}s grace: {why}",
                    w.last.len(),
                    since.elapsed().as_secs(),
                    w.grace.as_secs()
                )
            }),
        })
    }

    fn reconcile(&self, model: &Model) {
        let wanted: HashMap<String, (Duration, String)> = model
            .services
            .iter()
            .filter_map(|(name, e)| {
                self.registry
                    .key(&e.value)
                    .map(|k| (k, (grace_of(&e.value), name.clone())))
            })
            .collect();
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        watches.retain(|k, w| {
            let keep = wanted.contains_key(k);
            if !keep {
                w.task.abort();
                w.gauge.set(0);
            }
            keep
        });
        for (k, (grace, service)) in wanted {
            if let Some(w) = watches.get_mut(&k) {
                w.grace = grace;
                continue;
            }
            let gauge = self
                .metrics
                .discovery_stale
                .get_or_create(&ServiceLabels {
                    service,
                    source: self.registry.kind(),
                })
                .clone();
            let task = tokio::spawn(run(
                Arc::clone(&self.registry),
                k.clone(),
                Arc::clone(&self.watches),
                self.changed.clone(),
                Arc::clone(&self.metrics),
            ))
            .abort_handle();
            watches.insert(
                k,
                Watch {
                    last: Vec::new(),
                    grace,
                    stale: None,
                    task,
                    gauge,
                },
            );
        }
    }
}

/// Applies an answer (or an error) to a watch; true when its endpoints changed.
fn settle(w: &mut Watch, answer: Result<Vec<Endpoint>, String>) -> bool {
    let now = Instant::now();
    let hold = |w: &mut Watch, why: String| {
        let since = w.stale.get_or_insert((now, why.clone()));
        since.1 = why;
        if now.duration_since(since.0) >= w.grace {
            // Grace is over: the registry's word stands.
            w.stale = None;
            w.gauge.set(0);
            return !std::mem::take(&mut w.last).is_empty();
        }
        w.gauge.set(1);
        false
    };
    match answer {
        Ok(eps) if eps.is_empty() && !w.last.is_empty() => {
            hold(w, "the registry answered no endpoints".into())
        }
        Ok(eps) => {
            w.stale = None;
            w.gauge.set(0);
            if w.last == eps {
                false
            } else {
                w.last = eps;
                true
            }
        }
        // Nothing known to keep.
        Err(_) if w.last.is_empty() => false,
        Err(e) => hold(w, e),
    }
}

async fn run<R: Registry>(
    registry: Arc<R>,
    key: String,
    watches: Arc<Mutex<HashMap<String, Watch>>>,
    changed: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
) {
    let mut index: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let answer = registry.fetch(&key, index.as_deref()).await;
        let ok = answer.is_ok();
        if let Err(e) = &answer {
            failures = failures.saturating_add(1);
            metrics
                .discovery_errors
                .get_or_create(&crate::metrics::SourceLabels {
                    source: registry.kind(),
                })
                .inc();
            if failures == 1 {
                tracing::warn!(source = registry.kind(), %key, error = %e, "registry query failed; keeping the last known endpoints and retrying");
            }
        } else {
            if failures > 0 {
                tracing::info!(source = registry.kind(), %key, "registry answers again");
            }
            failures = 0;
        }
        let update = {
            let mut w = watches.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(watch) = w.get_mut(&key) else {
                return;
            };
            let endpoints = answer.map(|a| {
                index = a.index;
                a.endpoints
            });
            settle(watch, endpoints)
        };
        if update {
            let _ = changed.try_send(());
        }
        let wait = if ok {
            registry.min_interval().saturating_sub(started.elapsed())
        } else {
            let cap = BACKOFF_BASE
                .saturating_mul(1 << failures.min(8))
                .min(BACKOFF_MAX);
            cap.mul_f64(0.5 + fastrand::f64() / 2.0)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Percent-encodes `s` for a URL path segment or query value.
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn request(url: &str, headers: &[(&str, &str)]) -> Result<http::Request<Empty<Bytes>>, String> {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Empty::new())
        .map_err(|e| format!("bad request {url}: {e}"))
}

/// How a registry with blocking queries (Consul, Nomad) names its headers.
pub struct Blocking<'a> {
    /// e.g. `x-consul-token`, with the token to send (if any).
    pub token: Option<(&'static str, &'a str)>,
    /// e.g. `x-consul-index`: the index to pass to the next query.
    pub index_header: &'static str,
    pub timeout: Duration,
}

/// One blocking query: `url` plus `&index=I&wait=30s` after the first answer. Returns the
/// body and the next index; a non-2xx answer is an error with its text.
pub async fn blocking_get(
    http: &HttpClient,
    mut url: String,
    index: Option<&str>,
    b: &Blocking<'_>,
) -> Result<(Bytes, Option<String>), String> {
    if let Some(i) = index {
        url.push_str(&format!("&index={i}&wait=30s"));
    }
    let headers: Vec<(&str, &str)> = b.token.into_iter().collect();
    let (status, h, body) = http.get(&url, &headers, b.timeout).await?;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let next = h
        .get(b.index_header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    Ok((body, next))
}

/// A plain-HTTP client for registries.
#[derive(Clone)]
pub struct HttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(connector),
        }
    }
}

impl HttpClient {
    /// GET `url` and hand back the body as it streams (for event streams).
    pub async fn stream(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<hyper::body::Incoming, String> {
        let req = request(url, headers)?;
        let rsp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{url}: no answer within 10s"))?
            .map_err(|e| format!("{url}: {e}"))?;
        if !rsp.status().is_success() {
            return Err(format!("{url}: {}", rsp.status()));
        }
        Ok(rsp.into_body())
    }

    /// GET `url` with `headers`, within `timeout`: (status, headers, body).
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        let req = request(url, headers)?;
        let call = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let (parts, body) = rsp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str) -> Endpoint {
        Endpoint {
            address: a.into(),
            weight: None,
            identity: String::new(),
        }
    }

    fn watch(grace: Duration) -> Watch {
        Watch {
            last: Vec::new(),
            grace,
            stale: None,
            task: tokio::spawn(async {}).abort_handle(),
            gauge: Gauge::default(),
        }
    }

    #[tokio::test]
    async fn errors_and_empty_answers_keep_the_last_endpoints_for_the_grace_period() {
        let mut w = watch(Duration::from_secs(60));
        assert!(
            !settle(&mut w, Err("down".into())),
            "nothing known yet: nothing to keep"
        );
        assert!(w.stale.is_none());
        assert!(settle(&mut w, Ok(vec![ep("10.0.0.1:80")])));
        assert!(!settle(&mut w, Ok(vec![ep("10.0.0.1:80")])), "unchanged");
        assert!(!settle(&mut w, Err("timeout".into())));
        assert_eq!(w.last, vec![ep("10.0.0.1:80")]);
        assert_eq!(w.gauge.get(), 1);
        assert!(w.stale.as_ref().is_some_and(|(_, why)| why == "timeout"));
        assert!(
            !settle(&mut w, Ok(Vec::new())),
            "an empty answer is held too"
        );
        assert_eq!(w.last.len(), 1);
        assert!(settle(&mut w, Ok(vec![ep("10.0.0.2:80")])));
        assert!(w.stale.is_none());
        assert_eq!(w.gauge.get(), 0);
    }

    #[tokio::test]
    async fn after_the_grace_period_the_registry_wins() {
        let mut w = watch(Duration::ZERO);
        assert!(settle(&mut w, Ok(vec![ep("10.0.0.1:80")])));
        assert!(
            settle(&mut w, Ok(Vec::new())),
            "no grace: the empty answer applies"
        );
        assert!(w.last.is_empty());
        assert!(w.stale.is_none());
    }
}
