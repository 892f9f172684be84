//! One request to the API server: the answer's status code, its body parsed,
//! and `429 Too Many Requests` retried as the server asks (`Retry-After`).
//!
//! kube-rs' `Client::request` hides the status code; the engine needs it (an
//! apply answered `201` created the object). Errors are built the way
//! kube-rs builds them, so a `text/plain` `404 page not found` (an unknown
//! API group on a real server) is an `Error::Api` with code 404 too.

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::core::Status;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// A successful answer.
pub(crate) struct Answer<T> {
    /// `200`, `201`, ...
    pub status: StatusCode,
    /// The parsed body.
    pub body: T,
}

/// How long to wait when a `429` carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sends `request`; a `429` is retried after its `Retry-After` until
/// `deadline` (then the `429` is the error).
pub(crate) async fn send<T: DeserializeOwned>(
    client: &Client,
    request: Request<Vec<u8>>,
    deadline: Instant,
) -> Result<Answer<T>, kube::Error> {
    loop {
        let response = client
            .send(copy(&request).map(kube::client::Body::from))
            .await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_RETRY_AFTER);
        let bytes = response.into_body().collect().await?.to_bytes();
        if status == StatusCode::TOO_MANY_REQUESTS && Instant::now() + retry_after < deadline {
            tokio::time::sleep(retry_after).await;
            continue;
        }
        if status.is_client_error() || status.is_server_error() {
            return Err(api_error(status, &bytes));
        }
        let body = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
        return Ok(Answer { status, body });
    }
}

fn copy(request: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut out = Request::new(request.body().clone());
    *out.method_mut() = request.method().clone();
    *out.uri_mut() = request.uri().clone();
    *out.headers_mut() = request.headers().clone();
    out
}

/// The error of a failed answer: its `Status`, or one built from the text.
fn api_error(status: StatusCode, body: &[u8]) -> kube::Error {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) => kube::Error::Api(s.boxed()),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            kube::Error::Api(
                Status::failure(text.trim(), "")
                    .with_code(status.as_u16())
                    .boxed(),
            )
        }
    }
}

/// The server's message and reason, for error texts.
pub(crate) fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let mut t = s.message.clone();
            if !s.reason.is_empty() {
                t.push_str(&format!(" ({}, HTTP {})", s.reason, s.code));
            } else if s.code != 0 {
                t.push_str(&format!(" (HTTP {})", s.code));
            }
            t
        }
        other => other.to_string(),
    }
}

/// Whether the error is a `404` of any shape.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
