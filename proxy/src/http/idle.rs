//! Idle timeouts of streams and connections. [`IdleTimer`] ends a response body from which
//! no byte arrives for a while; it is armed only when the body has to wait (a body that is
//! already whole never touches a timer). [`ActiveRequest`] counts a connection's requests in
//! flight, so that [`idle`] can tell when a connection has been idle long enough to close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::http::proxy::ConnInfo;

/// A body waited longer than its stream idle timeout for its next bytes.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no bytes from the upstream for {0:?} (stream idle timeout)")]
pub struct StreamIdle(pub Duration);

#[derive(Debug)]
pub struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl IdleTimer {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            sleep: None,
            progressed: true,
        }
    }

    /// Call after each poll of the body: `pending` is whether it had to wait. Errors once
    /// the body has waited `after` since its last progress.
    pub fn check(&mut self, cx: &mut Context<'_>, pending: bool) -> Result<(), StreamIdle> {
        if !pending {
            self.progressed = true;
            return Ok(());
        }
        if self.progressed {
            let deadline = Instant::now() + self.after;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.progressed = false;
        }
        if let Some(s) = &mut self.sleep
            && s.as_mut().poll(cx).is_ready()
        {
            return Err(StreamIdle(self.after));
        }
        Ok(())
    }
}

/// A request in flight on a connection; when dropped (the response body finished or was
/// abandoned) the connection's idle clock restarts.
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnInfo>);

impl ActiveRequest {
    pub fn new(conn: Arc<ConnInfo>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes once the connection has had no request in flight for its idle timeout.
pub async fn idle(conn: &ConnInfo) {
    loop {
        let wait = match conn.idle_for() {
            Some(d) if d >= conn.idle_timeout => return,
            Some(d) => conn.idle_timeout - d,
            None => conn.idle_timeout,
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_only_after_a_wait_without_progress() {
        let mut t = IdleTimer::new(Duration::from_secs(5));
        std::future::poll_fn(|cx| {
            // Progress, then a wait: armed.
            assert!(t.check(cx, false).is_ok());
            assert!(t.check(cx, true).is_ok());
            Poll::Ready(())
        })
        .await;
        tokio::time::advance(Duration::from_secs(4)).await;
        std::future::poll_fn(|cx| {
            assert!(t.check(cx, true).is_ok());
            // Progress restarts the clock.
            assert!(t.check(cx, false).is_ok());
            assert!(t.check(cx, true).is_ok());
            Poll::Ready(())
        })
        .await;
        tokio::time::advance(Duration::from_secs(4)).await;
        std::future::poll_fn(|cx| {
            assert!(t.check(cx, true).is_ok());
            Poll::Ready(())
        })
        .await;
        tokio::time::advance(Duration::from_secs(2)).await;
        std::future::poll_fn(|cx| {
            assert!(t.check(cx, true).is_err());
            Poll::Ready(())
        })
        .await;
    }
}
