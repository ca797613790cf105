//! Downstream HTTP/1.1 connections served in their own task without hyper for the common
//! case: a request with no body or a small one of known length is parsed in place, routed
//! through the same [`handle`] path (so every layer applies), and its response written
//! with one vectored write when it is already whole. Anything else (a streamed or chunked
//! request body, an upgrade, `Expect`, HTTP/1.0, `CONNECT`) hands the connection, with the
//! bytes read so far, to hyper's server for the rest of its life.
//!
//! Limits: a request head must arrive within 30 s of its first byte; a keep-alive
//! connection may idle 75 s between requests; heads up to 64 KiB and 128 fields.

mod codec;

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::http::body::ProxyBody;
use crate::http::proxy::{ConnInfo, handle};
use crate::http::server::{self, HttpVersion};
use crate::io::PrefixedIo;
use crate::state::Proxy;
use codec::{Framing, Parsed};

const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 8 * 1024;
const MAX_IOVECS: usize = 16;

/// Serves `stream` (with `buf`, the bytes protocol detection already read).
pub async fn serve(
    mut stream: TcpStream,
    mut buf: BytesMut,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    drain: CancellationToken,
) {
    let mut spans = Vec::new();
    loop {
        let parsed =
            match read_head(&mut stream, &mut buf, &mut spans, &drain, conn.idle_timeout).await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "downstream connection failed");
                    return;
                }
            };
        let (parts, head_len, body_len, close) = match parsed {
            Parsed::Simple {
                parts,
                head_len,
                body_len,
                close,
            } => (parts, head_len, body_len, close),
            Parsed::HandOver => {
                let io = PrefixedIo::new(buf, stream);
                server::serve(io, HttpVersion::Http1, proxy, conn, drain).await;
                return;
            }
            Parsed::Invalid(status) => {
                let _ = stream.write_all(&codec::error_response(status)).await;
                return;
            }
            Parsed::Partial => return,
        };
        // The body (bounded by MAX_INLINE_BODY) is read whole before routing.
        while buf.len() < head_len + body_len {
            buf.reserve(head_len + body_len - buf.len());
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let head = buf.split_to(head_len).freeze();
        let Some(headers) = codec::headers(&head, &spans) else {
            let _ = stream
                .write_all(&codec::error_response(StatusCode::BAD_REQUEST))
                .await;
            return;
        };
        let body = if body_len == 0 {
            ProxyBody::empty()
        } else {
            ProxyBody::full(buf.split_to(body_len).freeze())
        };
        let trailers_ok = headers
            .get(http::header::TE)
            .is_some_and(|v| has_trailers(v.as_bytes()));
        let mut req = Request::from_parts(parts, body);
        *req.headers_mut() = headers;
        let method = req.method().clone();
        let Ok(rsp) = handle(req, Arc::clone(&proxy), Arc::clone(&conn)).await;
        let close = close || drain.is_cancelled();
        if let Err(e) = write_response(&mut stream, rsp, &method, close, trailers_ok).await {
            tracing::debug!(error = %e, "writing the response downstream failed");
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Reads until a request head is complete (or the connection ends: `Ok(None)`). Waiting
/// for the first byte is bounded by the listener's idle timeout and ends at once on drain;
/// the rest of the head must follow within the head timeout.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    spans: &mut Vec<(usize, usize, usize, usize)>,
    drain: &CancellationToken,
    idle_timeout: Duration,
) -> std::io::Result<Option<Parsed>> {
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if !buf.is_empty() {
            match codec::parse_request(buf, spans) {
                Parsed::Partial => {}
                done => return Ok(Some(done)),
            }
        }
        let until = *deadline.get_or_insert_with(|| {
            tokio::time::Instant::now()
                + if buf.is_empty() {
                    idle_timeout
                } else {
                    HEAD_TIMEOUT
                }
        });
        let was_empty = buf.is_empty();
        // `read_buf` is cancel-safe, and a short read clears the socket's readiness, so the
        // next wait goes to the reactor instead of a read that would block.
        let n = tokio::select! {
            biased;
            r = stream.read_buf(reserve(buf)) => r?,
            () = drain.cancelled(), if was_empty => return Ok(None),
            () = tokio::time::sleep_until(until) => {
                if !was_empty {
                    let _ = stream.write_all(&codec::error_response(StatusCode::REQUEST_TIMEOUT)).await;
                }
                return Ok(None);
            }
        };
        if n == 0 {
            return Ok(None);
        }
        if was_empty {
            // The first bytes of a head: the head timeout starts with them.
            deadline = None;
        }
    }
}

fn has_trailers(te: &[u8]) -> bool {
    te.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

fn reserve(buf: &mut BytesMut) -> &mut BytesMut {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    buf
}

/// Writes the response: the head and every body frame already available in one vectored
/// write, then the rest as it comes. Trailers go out (chunked) when the client asked for
/// them with `TE: trailers`, and are dropped otherwise (RFC 9110 6.5.1).
async fn write_response(
    stream: &mut TcpStream,
    rsp: Response<ProxyBody>,
    method: &Method,
    close: bool,
    trailers_ok: bool,
) -> std::io::Result<()> {
    let (parts, mut body) = rsp.into_parts();
    let no_body = method == Method::HEAD
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::None
    } else if body.is_end_stream() {
        Framing::Length(0)
    } else {
        match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    };
    let mut head = BytesMut::with_capacity(512);
    codec::encode_response_head(parts.status, &parts.headers, framing, close, &mut head);
    let mut out: VecDeque<Bytes> = VecDeque::from([head.freeze()]);
    if no_body || framing == Framing::Length(0) {
        return write_all(stream, &mut out).await;
    }
    let chunked = framing == Framing::Chunked;
    loop {
        // Take what the body has ready without waiting, then write it all at once.
        let frame = if out.is_empty() {
            body.frame().await
        } else {
            let polled =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            match polled {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    write_all(stream, &mut out).await?;
                    continue;
                }
            }
        };
        match frame {
            Some(Ok(f)) => {
                match f.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if chunked => {
                        out.push_back(crate::upstream::h1::codec::chunk_header(data.len()));
                        out.push_back(data);
                        out.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => out.push_back(data),
                    Err(f) => {
                        if let (true, true, Ok(t)) = (chunked, trailers_ok, f.into_trailers()) {
                            out.push_back(crate::upstream::h1::codec::encode_trailers(&t));
                            return write_all(stream, &mut out).await;
                        }
                    }
                }
                if out.len() >= MAX_IOVECS - 3 {
                    write_all(stream, &mut out).await?;
                }
            }
            Some(Err(e)) => {
                // The upstream failed part way: the client must see a truncated response.
                let _ = write_all(stream, &mut out).await;
                return Err(std::io::Error::other(e));
            }
            None => {
                if chunked {
                    out.push_back(Bytes::from_static(b"0\r\n\r\n"));
                }
                return write_all(stream, &mut out).await;
            }
        }
    }
}

async fn write_all(stream: &mut TcpStream, out: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !out.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = out.len().min(MAX_IOVECS);
        for (slot, b) in slices.iter_mut().zip(out.iter()) {
            *slot = IoSlice::new(b);
        }
        let mut written = stream.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = out.front_mut() else { break };
            if written >= front.len() {
                written -= front.len();
                out.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}
