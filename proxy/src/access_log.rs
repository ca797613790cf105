//! Access logs (and the entries `/tap` shows): one line per request, written when its response has been sent whole (so
//! duration and bytes are final), as JSON or compact text, to stdout or a file. Lines go
//! through a bounded queue to a writer task: a slow disk or a full pipe drops lines (counted
//! in `remora_access_log_lines_total{result="dropped"}`), never slows a request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use remora_control_api::listener::{AccessLog, AccessLogFormat};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};

/// Lines waiting for the writer, per destination.
const QUEUE: usize = 8192;

/// One destination (stdout or a file) and its writer task.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::Sender<String>,
    dropped: Counter,
}

impl Sink {
    pub fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// The open destinations, by path ("" for stdout); kept across configuration swaps.
#[derive(Debug, Default)]
pub struct Sinks {
    open: Mutex<HashMap<String, Arc<Sink>>>,
}

impl Sinks {
    /// The sink for `path`, opening it (and its writer task) on first use. Must run inside
    /// the runtime.
    pub fn get(&self, path: &str, metrics: &Metrics) -> Arc<Sink> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = open.get(path)
            && !s.tx.is_closed()
        {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let counter = |result| {
            metrics
                .access_log_lines
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        tokio::spawn(write_lines(rx, path.to_owned(), counter("written")));
        let sink = Arc::new(Sink {
            tx,
            dropped: counter("dropped"),
        });
        open.insert(path.to_owned(), sink.clone());
        sink
    }

    /// Closes destinations no listener uses any more.
    pub fn retain(&self, used: &[&str]) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p, _| used.contains(&p.as_str()));
    }
}

async fn write_lines(mut rx: mpsc::Receiver<String>, path: String, written: Counter) {
    let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if path.is_empty() {
        Box::new(tokio::io::stdout())
    } else {
        match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
        {
            Ok(f) => Box::new(f),
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot open the access log; its lines are dropped");
                return;
            }
        }
    };
    let mut lines = Vec::with_capacity(256);
    let mut buf = String::new();
    loop {
        if rx.recv_many(&mut lines, 256).await == 0 {
            return;
        }
        buf.clear();
        for l in lines.drain(..) {
            buf.push_str(&l);
            buf.push('\n');
        }
        let n = buf.bytes().filter(|b| *b == b'\n').count() as u64;
        if let Err(e) = async {
            out.write_all(buf.as_bytes()).await?;
            out.flush().await
        }
        .await
        {
            tracing::warn!(%path, error = %e, "writing the access log failed");
        } else {
            written.inc_by(n);
        }
    }
}

/// Where a listener's lines go, and how they look.
#[derive(Debug, Clone)]
pub struct ListenerLog {
    pub sink: Arc<Sink>,
    pub format: AccessLogFormat,
}

impl ListenerLog {
    pub fn new(cfg: &AccessLog, sinks: &Sinks, metrics: &Metrics) -> Self {
        Self {
            sink: sinks.get(&cfg.path, metrics),
            format: cfg.format,
        }
    }
}

/// One request, as logged.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub trace_id: Option<u128>,
    pub request_id: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    /// The `x-remora-error` reason when the proxy answered itself.
    pub flags: Option<&'static str>,
    pub upstream: Option<SocketAddr>,
    pub attempts: u32,
    pub duration: Duration,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub listener: String,
    pub route: String,
    pub cluster: String,
    pub client: Option<SocketAddr>,
    /// The caller's SPIFFE id on an mTLS connection.
    pub peer_identity: Option<std::sync::Arc<str>>,
}

/// `2026-12-04T04:21:18.123Z` (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Entry {
    pub fn line(&self, format: AccessLogFormat) -> String {
        let ts = rfc3339(self.start.unwrap_or_else(SystemTime::now));
        let ms = self.duration.as_secs_f64() * 1000.0;
        let trace = self.trace_id.map(|t| format!("{t:032x}"));
        match format {
            AccessLogFormat::Json => serde_json::json!({
                "timestamp": ts,
                "trace_id": trace,
                "request_id": self.request_id,
                "method": self.method,
                "authority": self.authority,
                "path": self.path,
                "protocol": self.protocol,
                "status": self.status,
                "response_flags": self.flags,
                "upstream": self.upstream.map(|u| u.to_string()),
                "attempts": self.attempts,
                "duration_ms": (ms * 1000.0).round() / 1000.0,
                "bytes_received": self.bytes_received,
                "bytes_sent": self.bytes_sent,
                "listener": self.listener,
                "route": self.route,
                "cluster": self.cluster,
                "client": self.client.map(|c| c.to_string()),
                "peer_identity": self.peer_identity.as_deref(),
            })
            .to_string(),
            AccessLogFormat::Text => {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                let mut l = format!(
                    "{ts} \"{} {} {}\" {} {} {} {} {}ms {} {} {} {} {} {} {}",
                    self.method,
                    self.path,
                    self.protocol,
                    self.status,
                    self.flags.unwrap_or("-"),
                    dash(&self.authority),
                    self.upstream
                        .map_or_else(|| "-".to_owned(), |u| u.to_string()),
                    (ms * 1000.0).round() / 1000.0,
                    self.attempts,
                    self.bytes_received,
                    self.bytes_sent,
                    dash(&self.route),
                    dash(&self.cluster),
                    self.client
                        .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    trace.as_deref().unwrap_or("-"),
                );
                let _ = write!(
                    l,
                    " {} {}",
                    dash(&self.request_id),
                    self.peer_identity.as_deref().unwrap_or("-")
                );
                l
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_358_078_123);
        assert_eq!(rfc3339(t), "2026-12-04T04:21:18.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_lines_parse_and_text_lines_have_every_field() {
        let e = Entry {
            trace_id: Some(0xabc),
            request_id: "r-1".into(),
            method: "GET".into(),
            authority: "orders".into(),
            path: "/a b\"c".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: Some("overflow"),
            attempts: 2,
            duration: Duration::from_micros(1500),
            bytes_sent: 10,
            ..Entry::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&e.line(AccessLogFormat::Json)).unwrap_or_default();
        assert_eq!(v["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(v["path"], "/a b\"c");
        assert_eq!(v["status"], 503);
        assert_eq!(v["response_flags"], "overflow");
        assert_eq!(v["duration_ms"], 1.5);
        let t = e.line(AccessLogFormat::Text);
        assert!(
            t.contains("\"GET /a b\"c HTTP/1.1\" 503 overflow orders - 1.5ms 2 0 10"),
            "{t}"
        );
        assert!(t.ends_with("00000000000000000000000000000abc r-1 -"), "{t}");
    }
}

/// A request's line, written when the response body is dropped (sent whole, or abandoned).
#[derive(Debug)]
pub struct PendingLog {
    pub entry: Entry,
    pub started: std::time::Instant,
    pub log: Option<ListenerLog>,
    /// Also shown to `/tap` subscribers.
    pub tap: Option<Arc<crate::tap::Tap>>,
    pub bytes: u64,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        self.entry.duration = self.started.elapsed();
        self.entry.bytes_sent = self.bytes;
        if let Some(log) = &self.log {
            log.sink.write(self.entry.line(log.format));
        }
        if let Some(tap) = &self.tap {
            tap.publish(Arc::new(std::mem::take(&mut self.entry)));
        }
    }
}
