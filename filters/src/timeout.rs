//! The per-route request timeout as a tower layer: if the response headers have not arrived
//! when it fires, the request fails with [`RouteTimeout`] (the proxy answers 504).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The route's timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("route timeout of {0:?} elapsed before the response")]
pub struct RouteTimeout(pub Duration);

#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Option<Duration>,
}

impl TimeoutLayer {
    /// `None` disables the timeout.
    pub fn new(timeout: Option<Duration>) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, R> tower::Service<R> for Timeout<S>
where
    S: tower::Service<R>,
    S::Error: From<RouteTimeout>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: self.timeout.map(tokio::time::sleep),
            timeout: self.timeout.unwrap_or_default(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        timeout: Duration,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<RouteTimeout>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        if let Some(sleep) = this.sleep.as_pin_mut()
            && sleep.poll(cx).is_ready()
        {
            return Poll::Ready(Err(RouteTimeout(*this.timeout).into()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn fires_only_when_slower_than_the_timeout() {
        let slow = tower::service_fn(|d: Duration| async move {
            tokio::time::sleep(d).await;
            Ok::<_, RouteTimeout>("done")
        });
        let layer = TimeoutLayer::new(Some(Duration::from_secs(2)));
        assert_eq!(
            layer.layer(slow).oneshot(Duration::from_secs(1)).await,
            Ok("done")
        );
        assert_eq!(
            layer.layer(slow).oneshot(Duration::from_secs(3)).await,
            Err(RouteTimeout(Duration::from_secs(2)))
        );
        let none = TimeoutLayer::new(None);
        assert_eq!(
            none.layer(slow).oneshot(Duration::from_secs(3600)).await,
            Ok("done")
        );
    }
}
