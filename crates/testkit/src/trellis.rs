//! A local HTTP server that plays the Trellis worker API, for tests.
//!
//! It serves the four endpoints a worker uses, checks `X-Worker-ID` and
//! `X-Worker-Token` on every request (401 otherwise), hands out the jobs a
//! test queued, records what it accepted (statuses, log chunks, heartbeats)
//! and every request it saw, and can misbehave on demand:
//!
//! - [`Trellis::fail_next`]: the next N requests answer a given status (e.g. 503);
//! - [`Trellis::set_outage`]: while on, every request has its connection
//!   closed without an answer (a network error for the client);
//! - [`Trellis::revoke_token`]: every request answers 401 from then on;
//! - [`Trellis::cancel_job`]: log posts and status updates for that job
//!   answer 409 Conflict, as the control plane does for a cancelled job.
//!
//! Endpoints: `POST /api/jobs/claim` (200 with a job, or 204),
//! `PUT /api/jobs/{id}/status`, `POST /api/jobs/{id}/logs`,
//! `POST /api/workers/heartbeat`.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The status answered (0 when the connection was dropped).
    pub status: u16,
    /// The value of `X-Worker-Token` as received.
    pub token: Option<String>,
    /// The body (JSON, or `null`).
    pub body: Value,
}

/// A status update the server accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The job.
    pub job: String,
    /// PROCESSING, SUCCESS, FAILED or CANCELLED.
    pub status: String,
    /// `error_message`.
    pub error_message: Option<String>,
    /// `error_phase`: the phase the job failed in.
    pub error_phase: Option<String>,
    /// `execution_metadata`.
    pub execution_metadata: Value,
}

/// A log chunk the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPost {
    /// The job.
    pub job: String,
    /// `log_chunk`.
    pub log_chunk: String,
    /// `stream_type`.
    pub stream_type: String,
}

#[derive(Default)]
struct State {
    worker_id: String,
    token: String,
    jobs: VecDeque<Value>,
    seen: Vec<Seen>,
    statuses: Vec<StatusUpdate>,
    logs: Vec<LogPost>,
    heartbeats: Vec<Value>,
    fail_next: VecDeque<u16>,
    outage: bool,
    revoked: bool,
    cancelled: HashSet<String>,
}

/// The server; stops when dropped.
pub struct Trellis {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Trellis {
    /// Starts a server on 127.0.0.1 (a free port) that accepts `worker_id` with `token`.
    /// Must be called inside a tokio runtime.
    pub async fn start(worker_id: &str, token: &str) -> Trellis {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the Trellis test server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let state = Arc::new(Mutex::new(State {
            worker_id: worker_id.to_string(),
            token: token.to_string(),
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Trellis { addr, state, task }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Queues a job for `POST /api/jobs/claim` (the claim response body).
    pub fn push_job(&self, job: Value) {
        self.with(|s| s.jobs.push_back(job));
    }

    /// Jobs not yet claimed.
    pub fn pending_jobs(&self) -> usize {
        self.with(|s| s.jobs.len())
    }

    /// The next `n` requests answer `status` (with a short JSON error body).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.with(|s| s.fail_next.extend(std::iter::repeat_n(status, n)));
    }

    /// While on, every connection is closed without an answer.
    pub fn set_outage(&self, on: bool) {
        self.with(|s| s.outage = on);
    }

    /// Every request answers 401 from now on.
    pub fn revoke_token(&self) {
        self.with(|s| s.revoked = true);
    }

    /// Log posts and status updates for `job` answer 409 from now on.
    pub fn cancel_job(&self, job: &str) {
        self.with(|s| {
            s.cancelled.insert(job.to_string());
        });
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// Status updates accepted, in order.
    pub fn statuses(&self) -> Vec<StatusUpdate> {
        self.with(|s| s.statuses.clone())
    }

    /// Log chunks accepted for `job`, in order.
    pub fn logs(&self, job: &str) -> Vec<LogPost> {
        self.with(|s| s.logs.iter().filter(|l| l.job == job).cloned().collect())
    }

    /// The text of all accepted log chunks of `job`, concatenated.
    pub fn log_text(&self, job: &str) -> String {
        self.logs(job).into_iter().map(|l| l.log_chunk).collect()
    }

    /// Heartbeat bodies accepted, in order.
    pub fn heartbeats(&self) -> Vec<Value> {
        self.with(|s| s.heartbeats.clone())
    }
}

impl Drop for Trellis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

fn json(status: StatusCode, body: Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (id, token) = (header("x-worker-id"), header("x-worker-token"));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut seen = Seen {
        method: method.to_string(),
        path: path.clone(),
        status: 0,
        token: token.clone(),
        body: body.clone(),
    };
    if s.outage {
        s.seen.push(seen);
        return Err(std::io::Error::other("outage: connection dropped"));
    }
    let (status, answer) = route(&mut s, &method, &path, id, token, body);
    seen.status = status.as_u16();
    s.seen.push(seen);
    json(status, answer)
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    id: Option<String>,
    token: Option<String>,
    body: Value,
) -> (StatusCode, Value) {
    if let Some(code) = s.fail_next.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, serde_json::json!({"error": "injected failure"}));
    }
    if s.revoked
        || id.as_deref() != Some(s.worker_id.as_str())
        || token.as_deref() != Some(s.token.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid worker credentials"}),
        );
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["api", "jobs", "claim"]) => match s.jobs.pop_front() {
            Some(job) => (StatusCode::OK, job),
            None => (StatusCode::NO_CONTENT, Value::Null),
        },
        (&Method::PUT, ["api", "jobs", job, "status"]) => {
            if s.cancelled.contains(*job) {
                return (
                    StatusCode::CONFLICT,
                    serde_json::json!({"error": "job was cancelled"}),
                );
            }
            let Some(status) = body.get("status").and_then(Value::as_str) else {
                return (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "status is required"}),
                );
            };
            s.statuses.push(StatusUpdate {
                job: job.to_string(),
                status: status.to_string(),
                error_message: body
                    .get("error_message")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                error_phase: body
                    .get("error_phase")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                execution_metadata: body
                    .get("execution_metadata")
                    .cloned()
                    .unwrap_or(Value::Null),
            });
            (StatusCode::OK, serde_json::json!({"ok": true}))
        }
        (&Method::POST, ["api", "jobs", job, "logs"]) => {
            if s.cancelled.contains(*job) {
                return (
                    StatusCode::CONFLICT,
                    serde_json::json!({"error": "job was cancelled"}),
                );
            }
            let chunk = body.get("log_chunk").and_then(Value::as_str);
            let stream = body.get("stream_type").and_then(Value::as_str);
            match (chunk, stream) {
                (Some(c), Some(t @ ("STDOUT" | "STDERR" | "SYSTEM"))) => {
                    s.logs.push(LogPost {
                        job: job.to_string(),
                        log_chunk: c.to_string(),
                        stream_type: t.to_string(),
                    });
                    (StatusCode::OK, serde_json::json!({"ok": true}))
                }
                _ => (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "log_chunk and stream_type (STDOUT|STDERR|SYSTEM) are required"}),
                ),
            }
        }
        (&Method::POST, ["api", "workers", "heartbeat"]) => {
            s.heartbeats.push(body);
            (StatusCode::OK, serde_json::json!({"ok": true}))
        }
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}
