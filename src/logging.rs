//! What the library logs about its own I/O, for a person debugging a job.
//!
//! The library only emits `tracing` events and spans (a `job` span per job, a
//! `phase` span per phase, debug events for each terraform command line, API
//! discovery, waits and every Kubernetes API request); the binary decides where
//! they go (`TENDRIL_LOG`, `--log-format`). [`RequestLogLayer`] is the tower
//! layer every Kubernetes client tendril builds carries: one debug event per
//! request with its verb, path and status. Headers (the bearer token) and
//! bodies (Secrets) are never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

/// Requests sent by every client that carries [`RequestLogLayer`] in this process.
static API_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// How many Kubernetes API requests this process has sent so far (all
/// clients built by tendril count; `tendril apply` prints it in its summary).
pub fn api_requests_sent() -> u64 {
    API_REQUESTS.load(Ordering::Relaxed)
}

/// Logs every HTTP request of a Kubernetes client at debug level (target
/// `tendril::logging`): method, path with query, status and milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

/// The service [`RequestLogLayer`] wraps around a client's HTTP stack.
#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let started = Instant::now();
        API_REQUESTS.fetch_add(1, Ordering::Relaxed);
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match &result {
                Ok(r) => {
                    tracing::debug!(%method, %path, status = r.status().as_u16(), millis, "API request")
                }
                Err(e) => tracing::debug!(%method, %path, error = %e, millis, "API request failed"),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn passes_requests_and_responses_through_unchanged() {
        let inner = tower::service_fn(|req: Request<String>| async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(201)
                    .body(format!("{} {}", req.method(), req.uri()))
                    .expect("a response"),
            )
        });
        let svc = RequestLogLayer.layer(inner);
        let req = Request::post("/api/v1/namespaces?limit=1")
            .body(String::new())
            .expect("a request");
        let resp = svc.oneshot(req).await.expect("the inner service answers");
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.body(), "POST /api/v1/namespaces?limit=1");
    }
}
