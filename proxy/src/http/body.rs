//! `ProxyBody`: the one body type the proxy moves in both directions: a streamed hyper body,
//! a response read by the in-task HTTP/1.1 client, or a small body the proxy made itself
//! (errors, direct responses), or a request body kept for retries ([`crate::http::replay`]).
//! No boxing of the body itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use prometheus_client::metrics::counter::Counter;

use crate::http::idle::{ActiveRequest, IdleTimer};
use crate::upstream::h1::ResponseBody;

/// Errors a body can end with (a hyper error, or an upstream HTTP/1.1 one).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Streamed { #[pin] body: Incoming, idle: Option<IdleTimer>, bytes: Option<Counter> },
        Upstream { #[pin] body: ResponseBody },
        Full { data: Option<Bytes> },
        Replay { #[pin] body: crate::http::replay::ReplayBody },
        /// A response on a hyper-served connection: counted as in flight until done.
        Tracked { body: Pin<Box<ProxyBody>>, active: ActiveRequest },
        /// A response whose access-log line is written when it is done.
        Logged { body: Pin<Box<ProxyBody>>, log: Box<crate::access_log::PendingLog> },
    }
}

impl ProxyBody {
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ProxyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        ProxyBody::Full { data: None }
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Streamed { .. } => f.write_str("ProxyBody::Streamed"),
            ProxyBody::Upstream { body } => write!(f, "ProxyBody::Upstream({body:?})"),
            ProxyBody::Full { data } => write!(
                f,
                "ProxyBody::Full({:?} bytes)",
                data.as_ref().map_or(0, Bytes::len)
            ),
            ProxyBody::Replay { .. } => f.write_str("ProxyBody::Replay"),
            ProxyBody::Tracked { body, .. } => write!(f, "ProxyBody::Tracked({body:?})"),
            ProxyBody::Logged { body, .. } => write!(f, "ProxyBody::Logged({body:?})"),
        }
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Streamed {
            body,
            idle: None,
            bytes: None,
        }
    }
}

impl ProxyBody {
    /// An upstream's streamed body, ended with an error after `idle` without bytes.
    pub fn streamed_with_idle(body: Incoming, idle: std::time::Duration) -> Self {
        ProxyBody::Streamed {
            body,
            idle: Some(IdleTimer::new(idle)),
            bytes: None,
        }
    }

    /// Counts this body's bytes into `counter`: a whole body at once, a streamed one as its
    /// frames pass.
    pub fn count_bytes(&mut self, counter: &Counter) {
        match self {
            ProxyBody::Full { data } => {
                counter.inc_by(data.as_ref().map_or(0, |d| d.len() as u64));
            }
            ProxyBody::Streamed { bytes, .. } => *bytes = Some(counter.clone()),
            ProxyBody::Upstream { body } => body.count_bytes(counter.clone()),
            ProxyBody::Replay { .. } | ProxyBody::Tracked { .. } | ProxyBody::Logged { .. } => {}
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Streamed { body, idle, bytes } => {
                let poll = body.poll_frame(cx);
                if let Some(idle) = idle
                    && let Err(e) = idle.check(cx, poll.is_pending())
                {
                    return Poll::Ready(Some(Err(e.into())));
                }
                if let (Some(c), Poll::Ready(Some(Ok(frame)))) = (bytes.as_ref(), &poll)
                    && let Some(d) = frame.data_ref()
                {
                    c.inc_by(d.len() as u64);
                }
                poll.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
            ProxyBodyProj::Upstream { body } => body.poll_frame(cx),
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Replay { body } => body.poll_frame(cx),
            ProxyBodyProj::Tracked { body, .. } => body.as_mut().poll_frame(cx),
            ProxyBodyProj::Logged { body, log } => {
                let poll = body.as_mut().poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &poll
                    && let Some(d) = frame.data_ref()
                {
                    log.bytes += d.len() as u64;
                }
                poll
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streamed { body, .. } => body.is_end_stream(),
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
            ProxyBody::Replay { body } => body.is_end_stream(),
            ProxyBody::Tracked { body, .. } | ProxyBody::Logged { body, .. } => {
                body.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streamed { body, .. } => body.size_hint(),
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Replay { body } => body.size_hint(),
            ProxyBody::Tracked { body, .. } | ProxyBody::Logged { body, .. } => body.size_hint(),
        }
    }
}
