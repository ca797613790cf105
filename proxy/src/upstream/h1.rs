//! HTTP/1.1 to an upstream endpoint, run inside the request's own task. The request head is
//! written, the request body streamed, and the response read straight from the socket by
//! whoever polls the response body: no connection task, channel or extra wake-up between the
//! two sides (hyper's client spawns a task per connection and hands every request and body
//! chunk across channels). A connection goes back to its pool once the response has been
//! read to its end with the request sent whole; a pooled connection the upstream closed is
//! retried once on a fresh one when the request had no body.

pub(crate) mod codec;

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use crate::http::body::{BoxError, ProxyBody};
use crate::http::idle::IdleTimer;
use crate::upstream::ActiveGuard;
use crate::upstream::io::UpstreamIo;
use crate::upstream::pool::{ConnectError, ConnectParams, Pool};
use codec::{Chunked, Decoded, RequestFraming, ResponseFraming};

/// Read buffer reserved ahead of each read.
const READ_CHUNK: usize = 16 * 1024;
/// Most request-body chunks queued for one vectored write.
const MAX_IOVECS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid response from upstream: {0}")]
    Malformed(&'static str),
    #[error("upstream response body ended early")]
    Truncated,
    #[error("reading the request body failed: {0}")]
    RequestBody(BoxError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// One upstream connection, idle in a pool or carrying one exchange.
pub struct Conn {
    io: UpstreamIo,
    buf: BytesMut,
    /// Header spans of the last response head (kept to reuse the allocation).
    spans: Vec<(usize, usize, usize, usize)>,
    /// Has carried a response before (a failure before any byte may be a stale close).
    reused: bool,
    _active: ActiveGuard,
}

impl Conn {
    pub fn new(io: UpstreamIo, active: ActiveGuard) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            spans: Vec::new(),
            reused: false,
            _active: active,
        }
    }

    /// Still usable while idle: the upstream has sent nothing (no close, no stray bytes).
    pub fn idle_usable(&mut self) -> bool {
        self.buf.is_empty() && self.io.idle_usable()
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Sends `req` (routed and prepared for HTTP/1.1) over a pooled or new connection to the
/// pool's endpoint and returns the response once its head has arrived.
pub async fn send(
    pool: &Arc<Pool>,
    params: ConnectParams<'_>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, H1Error> {
    let (mut parts, body) = req.into_parts();
    // The body streams at once: an upstream's `100 Continue` is read past.
    if parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        parts.headers.remove(header::EXPECT);
    }
    let framing = if body.is_end_stream() {
        RequestFraming::None {
            zero_length: parts.headers.contains_key(header::CONTENT_LENGTH),
        }
    } else {
        match body.size_hint().exact() {
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    };
    let mut head = BytesMut::with_capacity(512);
    codec::encode_head(&parts, framing, &mut head);
    // No body, or a small one the proxy holds whole (it goes out with the head, in one
    // write); else the body streams, boxed.
    let body = match (framing, body) {
        (RequestFraming::None { .. }, _) => None,
        (RequestFraming::Length(_), ProxyBody::Full { data }) => {
            if let Some(d) = data {
                head.extend_from_slice(&d);
            }
            None
        }
        (_, body) => Some(Box::new(body)),
    };
    let replayable = body.is_none();
    let head = head.freeze();
    let method = parts.method;

    let mut conn = match pool.checkout_h1() {
        Some(c) => c,
        None => pool.connect_h1(params).await?,
    };
    let first = exchange(conn, head.clone(), body, framing, &method).await;
    let (ex, rsp) = match first {
        Ok(r) => r,
        Err((H1Error::Closed | H1Error::Io(_), true)) if replayable => {
            // The pooled connection was closed by the upstream while idle: once more, fresh.
            conn = pool.connect_h1(params).await?;
            exchange(conn, head, None, framing, &method)
                .await
                .map_err(|(e, _)| e)?
        }
        Err((e, _)) => return Err(e),
    };
    Ok(finish(ex, rsp, pool, params.max_idle, params.stream_idle))
}

/// Writes the head and body and reads the response head. On error also says whether the
/// connection had carried an earlier response and this one failed before any byte of answer.
async fn exchange(
    conn: Conn,
    head: Bytes,
    body: Option<Box<ProxyBody>>,
    framing: RequestFraming,
    method: &http::Method,
) -> Result<(Exchange, codec::ResponseHead), (H1Error, bool)> {
    let stale_possible = conn.reused;
    let mut ex = Exchange {
        conn,
        out: VecDeque::from([head]),
        body,
        chunked: framing == RequestFraming::Chunked,
    };
    let rsp = std::future::poll_fn(|cx| {
        if let Poll::Ready(Err(e)) = ex.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        ex.poll_head(cx, method)
    })
    .await;
    match rsp {
        Ok(r) => Ok((ex, r)),
        Err(e) => {
            let before_answer = stale_possible && ex.conn.buf.is_empty();
            Err((e, before_answer))
        }
    }
}

/// Builds the response; its body reads the rest from the connection, which returns to the
/// pool at the end when it can carry another request.
fn finish(
    ex: Exchange,
    head: codec::ResponseHead,
    pool: &Arc<Pool>,
    max_idle: usize,
    stream_idle: std::time::Duration,
) -> Response<ProxyBody> {
    let codec::ResponseHead {
        parts,
        framing,
        keep_alive,
    } = head;
    let mut body = ResponseBody {
        ex: Some(ex),
        framing: match framing {
            ResponseFraming::Empty => Framing::Done,
            ResponseFraming::Length(n) => Framing::Length(n),
            ResponseFraming::Chunked => Framing::Chunked(Chunked::Size),
            ResponseFraming::UntilClose => Framing::UntilClose,
        },
        keep_alive,
        pool: Arc::clone(pool),
        max_idle,
        idle: IdleTimer::new(stream_idle),
        bytes: None,
    };
    if body.framing == Framing::Done {
        body.release();
        return Response::from_parts(parts, ProxyBody::empty());
    }
    Response::from_parts(parts, ProxyBody::Upstream { body })
}

/// The request's bytes still to write and the socket they go to.
struct Exchange {
    conn: Conn,
    out: VecDeque<Bytes>,
    /// Boxed: a response body holds its exchange, and a request body may be a response body.
    body: Option<Box<ProxyBody>>,
    chunked: bool,
}

impl Exchange {
    /// Writes what is queued and pulls more from the request body. `Ready(Ok)` once the
    /// request is sent whole.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        loop {
            if !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = self.out.len().min(MAX_IOVECS);
                for (slot, b) in slices.iter_mut().zip(self.out.iter()) {
                    *slot = IoSlice::new(b);
                }
                let written =
                    ready!(Pin::new(&mut self.conn.io).poll_write_vectored(cx, &slices[..n]))?;
                if written == 0 {
                    return Poll::Ready(Err(H1Error::Closed));
                }
                self.advance(written);
                continue;
            }
            // TLS may hold written records back; a plain socket's flush does nothing.
            ready!(Pin::new(&mut self.conn.io).poll_flush(cx))?;
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body.as_mut()).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.out.push_back(codec::chunk_header(data.len()));
                        self.out.push_back(data);
                        self.out.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => self.out.push_back(data),
                    Err(frame) => {
                        if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                            self.out.push_back(codec::encode_trailers(&trailers));
                            self.chunked = false;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                None => {
                    if self.chunked {
                        self.out.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        self.chunked = false;
                    }
                    self.body = None;
                }
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.out.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    fn sent(&self) -> bool {
        self.out.is_empty() && self.body.is_none()
    }

    /// Reads until a final (non-1xx) response head is complete.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &http::Method,
    ) -> Poll<Result<codec::ResponseHead, H1Error>> {
        loop {
            let conn = &mut self.conn;
            if !conn.buf.is_empty()
                && let Some(head) = codec::parse_head(&mut conn.buf, method, &mut conn.spans)?
            {
                if head.parts.status.is_informational() {
                    // 100 Continue, 103 Early Hints: not forwarded; the final answer follows.
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if ready!(conn.poll_read_more(cx))? == 0 {
                return Poll::Ready(Err(if conn.buf.is_empty() {
                    H1Error::Closed
                } else {
                    H1Error::Malformed("connection closed inside the response head")
                }));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A response body read from the upstream connection by the task that polls it.
pub struct ResponseBody {
    ex: Option<Exchange>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    max_idle: usize,
    idle: IdleTimer,
    bytes: Option<prometheus_client::metrics::counter::Counter>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// Counts the body's bytes into `counter` as they are read.
    pub fn count_bytes(&mut self, counter: prometheus_client::metrics::counter::Counter) {
        self.bytes = Some(counter);
    }

    /// At the end of the response: the connection goes back to the pool if it can carry
    /// another request, else it closes.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut ex) = self.ex.take()
            && self.keep_alive
            && ex.sent()
            && ex.conn.buf.is_empty()
        {
            ex.conn.reused = true;
            self.pool.checkin_h1(ex.conn, self.max_idle);
        }
    }

    /// The next piece of the body, reading from the connection as needed.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(ex) = self.ex.as_mut() else {
            return Poll::Ready(None);
        };
        // An upstream may answer before it has read the whole request: keep sending.
        if !ex.sent()
            && let Poll::Ready(Err(e)) = ex.poll_send(cx)
        {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let buf = &mut ex.conn.buf;
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !buf.is_empty() => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    return Poll::Ready(Some(Ok(Frame::data(buf.split_to(n).freeze()))));
                }
                Framing::UntilClose if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                }
                Framing::Chunked(dec) if !buf.is_empty() => match dec.decode(buf)? {
                    Decoded::Data(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Decoded::Trailers(t) => {
                        self.framing = Framing::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Decoded::End => {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Decoded::NeedMore => {}
                },
                _ => {}
            }
            if ready!(ex.conn.poll_read_more(cx))? == 0 {
                if self.framing != Framing::UntilClose {
                    return Poll::Ready(Some(Err(H1Error::Truncated)));
                }
                self.keep_alive = false;
                self.framing = Framing::Done;
                return Poll::Ready(None);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = self.poll_next(cx);
        if let Err(e) = self.idle.check(cx, poll.is_pending()) {
            return Poll::Ready(Some(Err(e.into())));
        }
        let next = ready!(poll);
        if let (Some(c), Some(Ok(frame))) = (&self.bytes, &next)
            && let Some(d) = frame.data_ref()
        {
            c.inc_by(d.len() as u64);
        }
        if matches!(next, None | Some(Ok(_)))
            && matches!(self.framing, Framing::Done | Framing::Length(0))
        {
            self.release();
        }
        Poll::Ready(next.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
