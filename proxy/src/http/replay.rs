//! A request body that can be sent again: the first try streams it upstream as it arrives
//! (nothing waits for the whole body) while a copy of up to `max` bytes is kept; a retry
//! replays the copy and then goes on reading the client. Once the body outgrows `max` the copy
//! is dropped and the request can no longer be retried ([`ReplayBody::replayable`]).
//!
//! Only the newest clone may read from the client; an older try still holding its clone (a
//! connection task that has not let go yet) gets an error instead of stealing bytes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::http::body::{BoxError, ProxyBody};

#[derive(Debug)]
struct Shared {
    /// Chunks read from the client so far (while within `max`).
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    overflowed: bool,
    /// The rest of the client's body.
    rest: ProxyBody,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The clone allowed to read from `rest`.
    generation: u64,
    size_hint: SizeHint,
}

#[derive(Debug)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// Chunks of `chunks` this clone has yielded.
    pos: usize,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry")]
struct Superseded;

impl ReplayBody {
    pub fn new(body: ProxyBody, max: usize) -> Self {
        let size_hint = body.size_hint();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                chunks: Vec::new(),
                len: 0,
                max,
                overflowed: false,
                ended: body.is_end_stream(),
                rest: body,
                trailers: None,
                generation: 0,
                size_hint,
            })),
            generation: 0,
            pos: 0,
            trailers_sent: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a further clone would carry the whole body.
    pub fn replayable(&self) -> bool {
        !self.lock().overflowed
    }

    /// A clone that starts from the first byte; it becomes the one that reads on from the
    /// client. `None` when the body has outgrown the copy.
    pub fn replay(&self) -> Option<Self> {
        let mut s = self.lock();
        if s.overflowed {
            return None;
        }
        s.generation += 1;
        Some(Self {
            shared: Arc::clone(&self.shared),
            generation: s.generation,
            pos: 0,
            trailers_sent: false,
        })
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if this.pos < s.chunks.len() {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(s.chunks[this.pos - 1].clone()))));
        }
        if s.ended {
            if !this.trailers_sent
                && let Some(t) = s.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        if this.generation != s.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        let frame = match Pin::new(&mut s.rest).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                if !s.overflowed {
                    if s.len + data.len() <= s.max {
                        s.len += data.len();
                        s.chunks.push(data.clone());
                        this.pos += 1;
                    } else {
                        s.overflowed = true;
                        s.chunks = Vec::new();
                    }
                }
                if s.rest.is_end_stream() {
                    s.ended = true;
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Err(f) => f,
        };
        match frame.into_trailers() {
            Ok(t) => {
                s.trailers = Some(t.clone());
                s.ended = true;
                this.trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Err(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.lock();
        s.ended && self.pos >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        // Used to choose the framing before a try starts; every try sends the same body.
        self.lock().size_hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(b: ReplayBody) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let c = b.collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes().to_vec(), trailers))
    }

    fn body(data: &'static [u8]) -> ProxyBody {
        ProxyBody::full(Bytes::from_static(data))
    }

    #[tokio::test]
    async fn every_try_yields_the_same_bytes() {
        let source = ReplayBody::new(body(b"hello world"), 1024);
        for _ in 0..3 {
            let try_body = source.replay().unwrap_or_else(|| unreachable!());
            let (got, _) = collect(try_body).await.unwrap_or_default();
            assert_eq!(got, b"hello world");
        }
        // A try that stopped half way: the next one still gets everything.
        let source = ReplayBody::new(ProxyBody::full(vec![1u8; 100]), 1024);
        let mut partial = source.replay().unwrap_or_else(|| unreachable!());
        let first = partial.frame().await;
        assert!(matches!(first, Some(Ok(_))));
        drop(partial);
        let (got, _) = collect(source.replay().unwrap_or_else(|| unreachable!()))
            .await
            .unwrap_or_default();
        assert_eq!(got.len(), 100);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_copy_streams_but_cannot_be_replayed() {
        let big = ReplayBody::new(ProxyBody::full(vec![7u8; 2048]), 1024);
        assert!(big.replayable());
        let probe = ReplayBody {
            shared: Arc::clone(&big.shared),
            generation: u64::MAX,
            pos: 0,
            trailers_sent: false,
        };
        let (a, _) = collect(big).await.unwrap_or_default();
        assert_eq!(a.len(), 2048);
        assert!(!probe.replayable());
        assert!(probe.replay().is_none());
    }

    #[tokio::test]
    async fn an_older_try_cannot_read_on_after_a_replay() {
        let source = ReplayBody::new(body(b"abc"), 1024);
        let first = source.replay().unwrap_or_else(|| unreachable!());
        let _second = source.replay();
        let r = collect(first).await;
        assert!(r.is_err(), "{r:?}");
    }

    #[tokio::test]
    async fn an_empty_body_is_at_its_end() {
        let b = ReplayBody::new(ProxyBody::empty(), 1024);
        assert!(b.is_end_stream());
        let r = b.replay().unwrap_or_else(|| unreachable!());
        assert!(r.is_end_stream());
    }
}
