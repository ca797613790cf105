//! Steady client load for tests: one thread sends requests back to back (pooled keep-alive
//! connections) until stopped, counting successes (a 200 from an upstream) and failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::eventually;

/// Longest a load thread runs, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(120);

pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Sends `GET url` with `Host: host` until stopped. A success is a 200 carrying the echo
    /// upstream's `x-upstream` header; anything else (status, reset, refusal) is a failure.
    pub fn start(url: String, host: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (s, o, f, host) = (stop.clone(), ok.clone(), failed.clone(), host.to_owned());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
                let deadline = Instant::now() + MAX_RUN;
                while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let req = http::Request::get(url.as_str())
                        .header("host", host.as_str())
                        .body(http_body_util::Empty::new())
                        .expect("request");
                    match client.request(req).await {
                        Ok(r) if r.status() == 200 && r.headers().contains_key("x-upstream") => {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            o.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            eprintln!("failed request: {} {:?}", r.status(), r.headers());
                            f.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("failed request: {e:?}");
                            f.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` more requests have succeeded than now.
    pub fn wait_for(&self, n: usize) {
        let target = self.ok() + n;
        eventually(
            &format!("{n} more successful requests"),
            Duration::from_secs(20),
            || (self.ok() >= target).then_some(()),
        );
    }

    /// Stops the client and returns (succeeded, failed).
    pub fn stop(mut self) -> (usize, usize) {
        self.halt();
        (self.ok(), self.failed())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
