//! A minimal gRPC unary responder for the load harness: answers every HTTP/2 POST with one
//! length-prefixed message and `grpc-status: 0` trailers. Fast enough not to be the bottleneck
//! (a Python grpcio server would be). Usage: `perf-grpc-upstream 127.0.0.1:28095`.
//! With `--empty` every answer is an empty message: a blackhole OTLP/gRPC collector (an
//! empty `ExportTraceServiceResponse` is a success), for measuring tracing.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn unary(req: Request<Incoming>, empty: bool) -> Result<Response<IterBody>, Infallible> {
    let _ = req.into_body().collect().await;
    // gRPC message: compressed flag 0, length 10, payload (or length 0).
    let msg = if empty {
        Bytes::from_static(b"\x00\x00\x00\x00\x00")
    } else {
        Bytes::from_static(b"\x00\x00\x00\x00\x0aremora-ok!")
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut rsp = Response::new(IterBody(
        vec![Frame::data(msg), Frame::trailers(trailers)].into_iter(),
    ));
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(rsp)
}

/// A body from a fixed list of frames.
struct IterBody(std::vec::IntoIter<Frame<Bytes>>);

impl hyper::body::Body for IterBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.next().map(Ok))
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let empty = args.iter().any(|a| a == "--empty");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:28095".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| unary(req, empty)),
                    )
                    .await;
            });
        }
    })
}
