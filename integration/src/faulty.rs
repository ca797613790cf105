//! A fault-injecting upstream for resilience tests: HTTP/1.1 and HTTP/2 (h2c) on one port,
//! answering by a [`Fault`] that the test may change while it runs. It counts requests and
//! records each request's `x-remora-attempt` header and body size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 200 with the upstream's name as the body.
    Ok,
    /// This status, always.
    Status(u16),
    /// This status for one request in `every`, 200 for the rest.
    StatusEvery { status: u16, every: usize },
    /// Read the request, then break the connection (HTTP/1.1) or reset the stream (HTTP/2)
    /// without an answer.
    Reset,
    /// Never answer (for 60 s).
    Stall,
    /// Accept the connection and close it at once.
    CloseOnConnect,
    /// A trailers-only gRPC answer with this `grpc-status`.
    Grpc(u32),
    /// 200 after this many milliseconds.
    Delay(u64),
}

#[derive(Debug, Default)]
struct Seen {
    attempts: Vec<String>,
    body_sizes: Vec<usize>,
}

pub struct Faulty {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Faulty {
    /// Starts on 127.0.0.1 (port 0) in its own thread.
    pub fn start(name: &str, fault: Fault) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind faulty upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let fault = Arc::new(Mutex::new(fault));
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (f, r, s, n) = (
            fault.clone(),
            requests.clone(),
            seen.clone(),
            name.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    () = serve(listener, n.into(), f, r, s) => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            fault,
            requests,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Requests that reached the upstream (a `CloseOnConnect` connection counts as none).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// `x-remora-attempt` of each request, in arrival order ("" when absent).
    pub fn attempts(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attempts
            .clone()
    }

    /// Body size of each request whose body was read whole.
    pub fn body_sizes(&self) -> Vec<usize> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .body_sizes
            .clone()
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault: reset")
    }
}

impl std::error::Error for Broken {}

async fn serve(
    listener: tokio::net::TcpListener,
    name: Arc<str>,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if *fault.lock().unwrap_or_else(PoisonError::into_inner) == Fault::CloseOnConnect {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (name, fault, requests, seen) =
            (name.clone(), fault.clone(), requests.clone(), seen.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                let current = *fault.lock().unwrap_or_else(PoisonError::into_inner);
                let (name, seen) = (name.clone(), seen.clone());
                async move { answer(req, n, current, &name, &seen).await }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    n: usize,
    fault: Fault,
    name: &str,
    seen: &Mutex<Seen>,
) -> Result<Response<Full<Bytes>>, Broken> {
    let attempt = req
        .headers()
        .get("x-remora-attempt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req.into_body().collect().await.map_err(|_| Broken)?;
    {
        let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        s.attempts.push(attempt);
        s.body_sizes.push(body.to_bytes().len());
    }
    let status = |code: u16| {
        let mut r = Response::new(Full::new(Bytes::from(format!("{name} {code}\n"))));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        r.headers_mut()
            .insert("x-upstream", name.parse().expect("header value"));
        r
    };
    let ok = || {
        if grpc {
            grpc_answer(0, name)
        } else {
            status(200)
        }
    };
    Ok(match fault {
        Fault::Ok | Fault::CloseOnConnect => ok(),
        Fault::Status(code) => status(code),
        Fault::StatusEvery {
            status: code,
            every,
        } => {
            if every > 0 && n.is_multiple_of(every) {
                status(code)
            } else {
                ok()
            }
        }
        Fault::Reset => return Err(Broken),
        Fault::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            ok()
        }
        Fault::Grpc(code) => grpc_answer(code, name),
        Fault::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok()
        }
    })
}

fn grpc_answer(code: u32, name: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from(code));
    h.insert("x-upstream", name.parse().expect("header value"));
    r
}
