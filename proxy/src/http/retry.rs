//! The tries of a request whose route has a retry policy: each try goes to an available
//! endpoint other than the one that just failed, within its per-try timeout; a failed try
//! is retried when the policy's conditions say so and the method, the body copy, the
//! cluster's `maxRetries` and its retry budget all allow it, after a jittered backoff.
//! With hedging, a try without response headers after the delay gets a twin on another
//! endpoint and the first good answer wins.
//!
//! Every try carries `x-remora-attempt: N`. Refused retries and the reasons of sent ones are
//! counted per cluster.

use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use remora_control_api::resilience::RetryPolicy;
use remora_filters::balance::PickContext;
use remora_filters::breaker::{Limit, Slot};
use remora_filters::retry::{self, ATTEMPT_HEADER, Outcome, RetryReason};

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::http::forward::{Forward, pick, send_once};
use crate::http::replay::ReplayBody;
use crate::snapshot::ClusterTarget;
use crate::upstream::pool::ConnectError;

/// The policy of a route that hedges but does not retry.
pub static NO_RETRIES: std::sync::LazyLock<RetryPolicy> =
    std::sync::LazyLock::new(|| RetryPolicy {
        retry_on: remora_control_api::resilience::RetryOn::DEFAULT,
        max_retries: 0,
        per_try_timeout: None,
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
        retriable_status_codes: Vec::new(),
        retry_non_idempotent: false,
        max_body_bytes: remora_control_api::resilience::DEFAULT_MAX_BODY_BYTES as usize,
    });

/// Where each try's body comes from.
enum BodySource {
    /// Small and whole already (or empty): every try gets a cheap clone.
    Full(Option<Bytes>),
    /// Streamed with a copy kept for replay.
    Replay(ReplayBody),
    /// Too large to keep: sent once.
    Once(Option<Box<ProxyBody>>),
}

impl BodySource {
    fn new(body: ProxyBody, max: usize) -> Self {
        match body {
            ProxyBody::Full { data } if data.as_ref().is_none_or(|d| d.len() <= max) => {
                BodySource::Full(data)
            }
            b if b.is_end_stream() => BodySource::Full(None),
            b if b.size_hint().exact().is_some_and(|n| n > max as u64) => {
                BodySource::Once(Some(Box::new(b)))
            }
            b => BodySource::Replay(ReplayBody::new(b, max)),
        }
    }

    fn first(&mut self) -> ProxyBody {
        match self {
            BodySource::Full(data) => ProxyBody::Full { data: data.clone() },
            BodySource::Replay(r) => r
                .replay()
                .map_or_else(ProxyBody::empty, |body| ProxyBody::Replay { body }),
            BodySource::Once(b) => b.take().map_or_else(ProxyBody::empty, |b| *b),
        }
    }

    /// The body again for another try; `None` when it cannot be had whole.
    fn again(&mut self) -> Option<ProxyBody> {
        match self {
            BodySource::Full(data) => Some(ProxyBody::Full { data: data.clone() }),
            BodySource::Replay(r) => r.replay().map(|body| ProxyBody::Replay { body }),
            BodySource::Once(_) => None,
        }
    }

    fn replayable(&self) -> bool {
        match self {
            BodySource::Full(_) => true,
            BodySource::Replay(r) => r.replayable(),
            BodySource::Once(_) => false,
        }
    }
}

/// What a finished try means for retrying; `None` for results that are never retried
/// (an overflow, a bad request).
fn outcome(result: &Result<Response<ProxyBody>, ProxyError>) -> Option<Outcome> {
    match result {
        Ok(r) => Some(Outcome::Response {
            status: r.status(),
            grpc: retry::grpc_status(r.headers()),
        }),
        Err(ProxyError::Connect(ConnectError::Overflow(..))) => None,
        Err(ProxyError::Connect(_)) => Some(Outcome::ConnectFailure),
        Err(ProxyError::UpstreamReset(_)) => Some(Outcome::Reset),
        Err(ProxyError::TryTimeout(_)) => Some(Outcome::TryTimeout),
        Err(_) => None,
    }
}

fn retry_reason(
    policy: &RetryPolicy,
    result: &Result<Response<ProxyBody>, ProxyError>,
) -> Option<RetryReason> {
    retry::classify(
        &policy.retry_on,
        &policy.retriable_status_codes,
        outcome(result)?,
    )
}

fn attempt_header(n: u32) -> HeaderValue {
    HeaderValue::from(n)
}

/// Sends `req` (prepared for its upstream hop) with the route's retry policy.
pub async fn send(
    f: &Forward,
    policy: &RetryPolicy,
    ctx: PickContext,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cluster = &f.cluster;
    let is_grpc = crate::http::headers::is_grpc(req.headers());
    let (mut parts, body) = req.into_parts();
    let method_ok = retry::method_allowed(policy, &parts.method, is_grpc);
    let mut body = BodySource::new(body, policy.max_body_bytes);
    let hedge = f
        .hedge
        .filter(|_| method_ok && matches!(body, BodySource::Full(_)));
    let mut avoid = None;
    // The slot of the retry in flight (held until the next try ends).
    let mut _retry_slot: Option<Slot> = None;
    let mut attempt = 1u32;
    loop {
        parts
            .headers
            .insert(ATTEMPT_HEADER, attempt_header(attempt));
        let this_body = if attempt == 1 {
            body.first()
        } else {
            body.again().unwrap_or_else(ProxyBody::empty)
        };
        let idx = pick(cluster, ctx, avoid)?;
        // A sampled request gets one child span per try, each the parent of what it sends.
        let try_span = f.trace.as_ref().filter(|t| t.sampled()).map(|t| {
            let id = crate::trace::context::new_span_id();
            t.inject(&mut parts.headers, id);
            (t, id, std::time::SystemTime::now())
        });
        let req = Request::from_parts(parts.clone(), this_body);
        let (idx, result) = match hedge {
            Some(delay) => hedged(f, policy, ctx, delay, idx, req, &parts, &mut body).await,
            None => (idx, try_once(f, policy, idx, req).await),
        };
        if let Some(t) = &f.tries {
            t.tried(cluster.endpoints[idx].address);
        }
        if let Some((t, id, started)) = try_span {
            let outcome = match &result {
                Ok(r) => Ok(r.status().as_u16()),
                Err(e) => Err(e.reason()),
            };
            t.record_try(
                id,
                attempt,
                started,
                cluster.endpoints[idx].address,
                outcome,
            );
        }
        let Some(reason) = retry_reason(policy, &result) else {
            return result;
        };
        if attempt > policy.max_retries {
            return result;
        }
        let refused = |why: &'static str| cluster.retry_refused(why);
        if !method_ok {
            refused("not-idempotent");
            return result;
        }
        if !body.replayable() {
            refused("body-too-large");
            return result;
        }
        let Some(slot) = take_retry(cluster) else {
            return result;
        };
        cluster.retried(reason);
        _retry_slot = Some(slot);
        drop(result);
        tokio::time::sleep(retry::backoff(
            policy.backoff_base,
            policy.backoff_max,
            attempt,
        ))
        .await;
        avoid = Some(idx);
        attempt += 1;
    }
}

/// A slot of `maxRetries` and one retry from the budget, or `None` (counted) when either is
/// spent.
fn take_retry(cluster: &ClusterTarget) -> Option<Slot> {
    let Ok(slot) = cluster.acquire(Limit::Retries) else {
        cluster.retry_refused("max-retries");
        return None;
    };
    if !cluster.state.budget.withdraw(
        &cluster.cluster.resilience.budget,
        tokio::time::Instant::now(),
    ) {
        cluster.retry_refused("budget");
        return None;
    }
    Some(slot)
}

/// One try within the per-try timeout.
async fn try_once(
    f: &Forward,
    policy: &RetryPolicy,
    idx: usize,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cluster = &f.cluster;
    let Some(limit) = policy.per_try_timeout else {
        return send_once(cluster, idx, req, false, f.stream_idle).await;
    };
    match tokio::time::timeout(limit, send_once(cluster, idx, req, false, f.stream_idle)).await {
        Ok(r) => r,
        Err(_) => {
            cluster.try_timed_out(idx, &f.route);
            Err(ProxyError::TryTimeout(limit))
        }
    }
}

/// A try with a hedge: if `req` has no response headers after `delay`, a twin goes to
/// another endpoint (spending the retry budget); the first answer that would not be retried
/// wins and the other try is cancelled.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    f: &Forward,
    policy: &RetryPolicy,
    ctx: PickContext,
    delay: Duration,
    idx: usize,
    req: Request<ProxyBody>,
    parts: &Parts,
    body: &mut BodySource,
) -> (usize, Result<Response<ProxyBody>, ProxyError>) {
    let cluster = &f.cluster;
    let first = try_once(f, policy, idx, req);
    tokio::pin!(first);
    tokio::select! {
        r = &mut first => return (idx, r),
        () = tokio::time::sleep(delay) => {}
    }
    let twin = match pick(cluster, ctx, Some(idx)) {
        Ok(i) if i != idx => i,
        _ => return (idx, first.await),
    };
    let Some(twin_body) = body.again() else {
        return (idx, first.await);
    };
    let Some(_slot) = take_retry(cluster) else {
        return (idx, first.await);
    };
    cluster.retried(RetryReason::Hedge);
    let second = try_once(
        f,
        policy,
        twin,
        Request::from_parts(parts.clone(), twin_body),
    );
    tokio::pin!(second);
    let good = |r: &Result<Response<ProxyBody>, ProxyError>| retry_reason(policy, r).is_none();
    tokio::select! {
        r = &mut first => {
            if good(&r) { (idx, r) } else { (twin, second.await) }
        }
        r = &mut second => {
            if good(&r) { (twin, r) } else { (idx, first.await) }
        }
    }
}
