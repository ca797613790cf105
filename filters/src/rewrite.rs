//! Per-route header rewrites as a tower layer: request headers before the request goes on,
//! response headers when the response comes back. Order within a rewrite: remove, set, add.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use remora_control_api::route::HeaderRewrite;

/// Applies one rewrite to a header map.
pub fn apply(rewrite: &HeaderRewrite, headers: &mut HeaderMap) {
    for name in &rewrite.remove {
        headers.remove(name);
    }
    for (name, value) in &rewrite.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &rewrite.add {
        headers.append(name.clone(), value.clone());
    }
}

/// What [`Rewrite`] reads: the route's request and response rewrites.
#[derive(Debug, Clone, Default)]
pub struct RewriteParams {
    pub request: Option<Arc<HeaderRewrite>>,
    pub response: Option<Arc<HeaderRewrite>>,
}

#[derive(Debug, Clone)]
pub struct RewriteLayer {
    params: RewriteParams,
}

impl RewriteLayer {
    pub fn new(params: RewriteParams) -> Self {
        Self { params }
    }
}

impl<S> tower::Layer<S> for RewriteLayer {
    type Service = Rewrite<S>;
    fn layer(&self, inner: S) -> Rewrite<S> {
        Rewrite {
            inner,
            params: self.params.clone(),
        }
    }
}

/// The service: rewrites request headers, then response headers.
#[derive(Debug, Clone)]
pub struct Rewrite<S> {
    inner: S,
    params: RewriteParams,
}

impl<S, B, RB> tower::Service<Request<B>> for Rewrite<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = RewriteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(rw) = &self.params.request {
            apply(rw, req.headers_mut());
        }
        RewriteFuture {
            inner: self.inner.call(req),
            response: self.params.response.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RewriteFuture<F> {
        #[pin]
        inner: F,
        response: Option<Arc<HeaderRewrite>>,
    }
}

impl<F, RB, E> Future for RewriteFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(rw) = this.response.as_deref() {
            apply(rw, rsp.headers_mut());
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use tower::{Layer, ServiceExt};

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[tokio::test]
    async fn rewrites_both_directions_in_order() {
        let req_rw = HeaderRewrite {
            remove: vec![HeaderName::from_static("x-secret")],
            set: vec![(HeaderName::from_static("x-env"), hv("prod"))],
            add: vec![(HeaderName::from_static("x-tag"), hv("b"))],
        };
        let rsp_rw = HeaderRewrite {
            set: vec![(HeaderName::from_static("server"), hv("remora"))],
            ..Default::default()
        };
        let svc = tower::service_fn(|req: Request<()>| async move {
            let h = req.headers();
            assert!(h.get("x-secret").is_none());
            assert_eq!(h.get("x-env"), Some(&hv("prod")));
            let tags: Vec<_> = h.get_all("x-tag").iter().cloned().collect();
            assert_eq!(tags, vec![hv("a"), hv("b")]);
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("server", "app")
                    .body(())
                    .expect("response"),
            )
        });
        let layer = RewriteLayer::new(RewriteParams {
            request: Some(Arc::new(req_rw)),
            response: Some(Arc::new(rsp_rw)),
        });
        let req = Request::builder()
            .header("x-secret", "1")
            .header("x-env", "dev")
            .header("x-tag", "a")
            .body(())
            .expect("request");
        let rsp = layer.layer(svc).oneshot(req).await.expect("ok");
        assert_eq!(rsp.headers().get("server"), Some(&hv("remora")));
    }
}
