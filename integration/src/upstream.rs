//! An echo upstream speaking HTTP/1.1 and HTTP/2 (h2c), used by the tests and the demo.
//!
//! Paths: `/status/N` answers N; `/delay/MS` waits first; `/bytes/N` streams N bytes;
//! `/trailers` ends with trailers; `/reset` sends part of a body then breaks the stream;
//! anything else echoes the request (method, path, version, headers, body length, trailers)
//! as JSON.
//! Request bodies are counted as they stream, never buffered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = BoxBody<Bytes, std::io::Error>;

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Starts an echo upstream on 127.0.0.1 (port 0) in its own thread.
    pub fn start(name: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name, Duration::ZERO)
            .expect("bind upstream")
    }

    /// An upstream that waits `delay` before every response (a slow endpoint).
    pub fn slow(name: &str, delay: Duration) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name, delay).expect("bind upstream")
    }

    pub fn start_on(addr: SocketAddr, name: &str, delay: Duration) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (r, c, n) = (requests.clone(), connections.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    () = serve_with_delay(listener, n, r, c, delay) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            addr,
            name: name.to_owned(),
            requests,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves forever on `listener` (also used by the demo).
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
) {
    serve_with_delay(listener, name, requests, connections, Duration::ZERO).await;
}

async fn serve_with_delay(
    listener: tokio::net::TcpListener,
    name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    delay: Duration,
) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::SeqCst);
        let (name, requests) = (name.clone(), requests.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                requests.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    handle(req, name).await
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn frames(items: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Body {
    StreamBody::new(futures::stream::iter(items)).boxed()
}

async fn handle(req: Request<Incoming>, name: Arc<str>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let head = req.method() == http::Method::HEAD;
    let mut rsp = if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = Response::new(full(format!("status {}\n", status.as_u16())));
        *r.status_mut() = status;
        r
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full("delayed\n"))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut items = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            items.push(Ok(Frame::data(chunk.slice(..k))));
            left -= k;
        }
        let mut r = Response::new(frames(items));
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        r
    } else if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-trailer", HeaderValue::from_static("yes"));
        Response::new(frames(vec![
            Ok(Frame::data(Bytes::from_static(b"body\n"))),
            Ok(Frame::trailers(trailers)),
        ]))
    } else if path == "/reset" {
        // Part of the body, a pause (so it is on the wire), then the stream breaks.
        let stream = futures::stream::unfold(0u8, |step| async move {
            match step {
                0 => Some((Ok(Frame::data(Bytes::from(vec![b'y'; 32 * 1024]))), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((
                        Err(std::io::Error::other("upstream resets mid-response")),
                        2,
                    ))
                }
                _ => None,
            }
        });
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(1024 * 1024));
        r
    } else {
        echo(req, &name).await
    };
    rsp.headers_mut().insert(
        "x-upstream",
        HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("?")),
    );
    if head {
        // A HEAD response states the length the GET body would have, and carries none.
        if let Some(len) = http_body::Body::size_hint(rsp.body()).exact() {
            rsp.headers_mut()
                .entry(http::header::CONTENT_LENGTH)
                .or_insert(HeaderValue::from(len));
        }
        *rsp.body_mut() = full(Bytes::new());
    }
    Ok(rsp)
}

async fn echo(req: Request<Incoming>, name: &str) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut length = 0usize;
    let mut aborted = false;
    let mut trailers = serde_json::Map::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                length += f.data_ref().map_or(0, Bytes::len);
                if let Some(t) = f.trailers_ref() {
                    for (k, v) in t {
                        trailers.insert(
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                        );
                    }
                }
            }
            Err(_) => {
                aborted = true;
                break;
            }
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "server": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "bodyLength": length,
        "bodyAborted": aborted,
        "trailers": trailers,
    });
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
