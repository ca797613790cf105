//! `/tap` on the admin port: a live stream of the requests this proxy handles, one JSON line
//! each (the access-log fields), filtered by the query and bounded in rate, count and time.
//! Off unless `admin.tap: true`; when nobody listens, requests pay one atomic load.
//!
//! `GET /tap?authority=A&pathPrefix=/P&method=M&route=R&listener=L&status=S&max=N&rate=R&seconds=T`
//! — every filter is optional; `max` lines (default 100, at most 10,000), at most `rate`
//! lines per second (default 100; the rest are counted in a `{"skipped": n}` line), ending
//! after `seconds` (default 60, at most 600).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use remora_control_api::listener::AccessLogFormat;
use tokio::sync::{broadcast, mpsc};

use crate::access_log::Entry;

const CHANNEL: usize = 1024;

#[derive(Debug)]
pub struct Tap {
    tx: broadcast::Sender<Arc<Entry>>,
    subscribers: Arc<AtomicUsize>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Tap {
    /// Someone is watching.
    pub fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub fn publish(&self, e: Arc<Entry>) {
        let _ = self.tx.send(e);
    }
}

/// What a tap shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub authority: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    pub route: Option<String>,
    pub listener: Option<String>,
    pub status: Option<u16>,
    pub max: usize,
    pub rate: u32,
    pub seconds: u64,
}

fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

impl Query {
    pub fn parse(q: Option<&str>) -> Result<Self, String> {
        let mut query = Query {
            max: 100,
            rate: 100,
            seconds: 60,
            ..Query::default()
        };
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v)?;
            let num = |max: u64| -> Result<u64, String> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("{k}: must be a number from 1 to {max}"))
            };
            match k {
                "authority" => query.authority = Some(v),
                "pathPrefix" => query.path_prefix = Some(v),
                "method" => query.method = Some(v.to_ascii_uppercase()),
                "route" => query.route = Some(v),
                "listener" => query.listener = Some(v),
                "status" => query.status = Some(u16::try_from(num(599)?).unwrap_or(0)),
                "max" => query.max = usize::try_from(num(10_000)?).unwrap_or(100),
                "rate" => query.rate = u32::try_from(num(10_000)?).unwrap_or(100),
                "seconds" => query.seconds = num(600)?,
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (use authority, pathPrefix, method, route, \
                         listener, status, max, rate, seconds)"
                    ));
                }
            }
        }
        Ok(query)
    }

    pub fn matches(&self, e: &Entry) -> bool {
        self.authority
            .as_ref()
            .is_none_or(|a| e.authority.eq_ignore_ascii_case(a))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| e.path.starts_with(p.as_str()))
            && self.method.as_ref().is_none_or(|m| e.method == *m)
            && self.route.as_ref().is_none_or(|r| e.route == *r)
            && self.listener.as_ref().is_none_or(|l| e.listener == *l)
            && self.status.is_none_or(|s| e.status == s)
    }
}

/// Counts a subscriber for as long as its stream lives.
struct Subscribed(Arc<AtomicUsize>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a tap: the returned channel carries the response body's frames.
pub fn start(tap: &Tap, query: Query) -> mpsc::Receiver<Result<Frame<Bytes>, Infallible>> {
    tap.subscribers.fetch_add(1, Ordering::Relaxed);
    let guard = Subscribed(tap.subscribers.clone());
    let mut rx = tap.tx.subscribe();
    let (out, body) = mpsc::channel(16);
    tokio::spawn(async move {
        let _guard = guard;
        let end = tokio::time::Instant::now() + Duration::from_secs(query.seconds);
        let mut sent = 0usize;
        let mut window = tokio::time::Instant::now();
        let mut in_window = 0u32;
        let mut skipped = 0u64;
        while sent < query.max {
            let e = tokio::select! {
                r = rx.recv() => r,
                () = tokio::time::sleep_until(end) => break,
                () = out.closed() => return,
            };
            let e = match e {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    skipped += n;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if !query.matches(&e) {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now.duration_since(window) >= Duration::from_secs(1) {
                window = now;
                in_window = 0;
            }
            if in_window >= query.rate {
                skipped += 1;
                continue;
            }
            in_window += 1;
            sent += 1;
            let mut line = e.line(AccessLogFormat::Json);
            line.push('\n');
            if out.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                return;
            }
        }
        if skipped > 0 {
            let _ = out
                .send(Ok(Frame::data(Bytes::from(format!(
                    "{{\"skipped\":{skipped}}}\n"
                )))))
                .await;
        }
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_defaults_and_bad_ones_say_why() {
        let q = Query::parse(None).unwrap_or_default();
        assert_eq!((q.max, q.rate, q.seconds), (100, 100, 60));
        let q = Query::parse(Some(
            "authority=orders&pathPrefix=%2Fapi&method=get&status=503&max=5",
        ))
        .unwrap_or_default();
        assert_eq!(q.path_prefix.as_deref(), Some("/api"));
        assert_eq!(q.method.as_deref(), Some("GET"));
        assert_eq!((q.status, q.max), (Some(503), 5));
        let e = Entry {
            authority: "Orders".into(),
            path: "/api/x".into(),
            method: "GET".into(),
            status: 503,
            ..Entry::default()
        };
        assert!(q.matches(&e));
        assert!(!q.matches(&Entry {
            status: 200,
            ..e.clone()
        }));
        assert!(!q.matches(&Entry {
            path: "/web".into(),
            ..e
        }));
        for bad in [
            "max=0",
            "max=x",
            "rate=99999",
            "nope=1",
            "pathPrefix=%zz",
            "seconds=601",
        ] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
