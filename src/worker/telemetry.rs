//! Health and metrics of a long-lived worker, served over HTTP
//! (`tendril worker --listen ADDR`): `/healthz` and `/metrics`.
//!
//! [`Telemetry`] observes the worker's [`WorkerEvent`]s (it is fed from the
//! same [`Progress`](super::Progress) callback that prints them) and keeps:
//!
//! - the health: the claim loop runs, and the last heartbeat reached the
//!   queue (database or control plane) within the heartbeat window;
//! - Prometheus metrics (the `prometheus-client` crate's registry and
//!   encoders): jobs claimed and finished by job type (and status), a job
//!   duration histogram by type, the jobs running now by type, the age of
//!   the last delivered heartbeat, how long the current job has run.
//!
//! Job ids are never label values (one series per job would grow without
//! bound); the current job's id is in the `/healthz` text and the heartbeat.
//!
//! [`serve`] answers HTTP/1.1 on a bound listener (hyper, which the tree
//! already has through kube) until its stop token is cancelled.

use super::WorkerEvent;
use super::process::subcommand;
use crate::job::JobStatus;
use crate::job::{JobId, JobType};
use crate::queue::WorkerState;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Upper bounds (seconds) of the job duration histogram: from a quick PLAN
/// to a DEPLOY that creates an EKS or Aurora cluster (10–20 min) and more.
const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// A job type as a label value: the subcommand that runs it (`plan`, `deploy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Kind(JobType);

impl EncodeLabelValue for Kind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(subcommand(self.0))
    }
}

/// How a job ended, as a label value (`success`, `failed`, `cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ended(JobStatus);

impl EncodeLabelValue for Ended {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self.0 {
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    job_type: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndLabels {
    job_type: Kind,
    status: Ended,
}

/// Where the claim loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started yet (connecting to the queue).
    Starting,
    /// Claiming and running jobs.
    Running,
    /// Stopped.
    Stopped,
}

/// What the health answer is made of.
#[derive(Debug)]
struct State {
    phase: Phase,
    draining: bool,
    loop_started: Option<Instant>,
    last_heartbeat: Option<Instant>,
    last_error: Option<String>,
    current: Option<(JobId, JobType, Instant)>,
}

/// The answer of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// True: 200; false: 503.
    pub healthy: bool,
    /// One line saying why.
    pub reason: String,
}

/// Health and metrics of one worker (see the module docs).
#[derive(Debug)]
pub struct Telemetry {
    started: Instant,
    window: Duration,
    state: Mutex<State>,
    registry: Registry,
    claimed: Family<TypeLabels, Counter>,
    finished: Family<EndLabels, Counter>,
    duration: Family<TypeLabels, Histogram, fn() -> Histogram>,
    running: Family<TypeLabels, Gauge>,
    heartbeat_age: Gauge<f64, AtomicU64>,
    current_job_age: Gauge<f64, AtomicU64>,
}

impl Telemetry {
    /// Telemetry of a worker whose heartbeat must have reached the queue
    /// within `window` for it to be healthy (the worker's `stale_heartbeat`:
    /// past it, the queue takes the worker for dead).
    pub fn new(window: Duration) -> Telemetry {
        let mut registry = Registry::with_prefix("tendril_worker");
        let claimed = Family::<TypeLabels, Counter>::default();
        registry.register("jobs_claimed", "Jobs claimed, by job type", claimed.clone());
        let finished = Family::<EndLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs run to an end, by job type and status (success, failed, cancelled)",
            finished.clone(),
        );
        let duration = Family::<TypeLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "job_duration",
            "How long jobs ran, from start to end, by job type",
            Unit::Seconds,
            duration.clone(),
        );
        let running = Family::<TypeLabels, Gauge>::default();
        registry.register(
            "jobs_running",
            "Jobs running now, by job type (a worker runs at most one)",
            running.clone(),
        );
        let heartbeat_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_heartbeat_age",
            "Time since the last heartbeat reached the queue (since the worker started, before the first)",
            Unit::Seconds,
            heartbeat_age.clone(),
        );
        let current_job_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "current_job_age",
            "How long the current job has been running (0 when idle)",
            Unit::Seconds,
            current_job_age.clone(),
        );
        Telemetry {
            started: Instant::now(),
            window,
            state: Mutex::new(State {
                phase: Phase::Starting,
                draining: false,
                loop_started: None,
                last_heartbeat: None,
                last_error: None,
                current: None,
            }),
            registry,
            claimed,
            finished,
            duration,
            running,
            heartbeat_age,
            current_job_age,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one event of the worker into account.
    pub fn observe(&self, event: &WorkerEvent) {
        let mut st = self.state();
        match event {
            WorkerEvent::Started => {
                st.phase = Phase::Running;
                st.loop_started = Some(Instant::now());
            }
            WorkerEvent::Heartbeat { state } => {
                st.last_heartbeat = Some(Instant::now());
                st.last_error = None;
                if *state == WorkerState::Draining {
                    st.draining = true;
                }
            }
            WorkerEvent::Retrying { error, .. } | WorkerEvent::QueueError { error } => {
                st.last_error = Some(error.clone());
            }
            WorkerEvent::Claimed { job, job_type } => {
                let labels = TypeLabels {
                    job_type: Kind(*job_type),
                };
                self.claimed.get_or_create(&labels).inc();
                self.running.get_or_create(&labels).inc();
                st.current = Some((job.clone(), *job_type, Instant::now()));
            }
            WorkerEvent::Finished {
                job_type,
                status,
                elapsed,
                ..
            } => {
                let labels = TypeLabels {
                    job_type: Kind(*job_type),
                };
                self.finished
                    .get_or_create(&EndLabels {
                        job_type: Kind(*job_type),
                        status: Ended(*status),
                    })
                    .inc();
                self.duration
                    .get_or_create(&labels)
                    .observe(elapsed.as_secs_f64());
                self.running.get_or_create(&labels).dec();
                st.current = None;
            }
            WorkerEvent::Skipped { .. } => {
                if let Some((_, job_type, _)) = st.current.take() {
                    self.running
                        .get_or_create(&TypeLabels {
                            job_type: Kind(job_type),
                        })
                        .dec();
                }
            }
            WorkerEvent::Draining => st.draining = true,
            WorkerEvent::Stopped { .. } => st.phase = Phase::Stopped,
            WorkerEvent::Cancelling { .. } | WorkerEvent::Housekeeping { .. } => {}
        }
    }

    /// Healthy while the claim loop runs and the last heartbeat reached the
    /// queue within the window.
    pub fn health(&self) -> HealthReport {
        let st = self.state();
        let unhealthy = |reason: String| HealthReport {
            healthy: false,
            reason,
        };
        match st.phase {
            Phase::Starting => {
                return unhealthy(format!(
                    "starting: the claim loop has not started yet (connecting to the queue){}",
                    error_note(&st.last_error)
                ));
            }
            Phase::Stopped => return unhealthy("stopped: the claim loop has ended".into()),
            Phase::Running => {}
        }
        let window = self.window.as_secs_f64();
        // the claim loop starts once the queue was opened: that counts as reaching it
        let Some(last) = st.last_heartbeat.or(st.loop_started) else {
            return unhealthy("the queue has not been reached yet".into());
        };
        let age = last.elapsed();
        if age > self.window {
            return unhealthy(format!(
                "the queue was last reached {:.1} s ago (heartbeat), longer than the heartbeat window of {window:.0} s{}",
                age.as_secs_f64(),
                error_note(&st.last_error)
            ));
        }
        let doing = match &st.current {
            Some((id, job_type, since)) => format!(
                "running {job_type} job {id} for {:.0} s",
                since.elapsed().as_secs_f64()
            ),
            None => "idle".into(),
        };
        HealthReport {
            healthy: true,
            reason: format!(
                "ok: {}, {doing}, last heartbeat {:.1} s ago",
                if st.draining { "draining" } else { "claiming" },
                age.as_secs_f64()
            ),
        }
    }

    /// The metrics in the Prometheus text format (0.0.4), or OpenMetrics
    /// text with `openmetrics`.
    pub fn metrics(&self, format: MetricsFormat) -> String {
        {
            let st = self.state();
            let since = st.last_heartbeat.unwrap_or(self.started);
            self.heartbeat_age.set(since.elapsed().as_secs_f64());
            self.current_job_age.set(
                st.current
                    .as_ref()
                    .map(|(_, _, at)| at.elapsed().as_secs_f64())
                    .unwrap_or(0.0),
            );
        }
        let mut out = String::new();
        let encoded = match format {
            MetricsFormat::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            MetricsFormat::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        if encoded.is_err() {
            // Writing into a String cannot fail; never serve half a document.
            out.clear();
        }
        out
    }
}

fn error_note(e: &Option<String>) -> String {
    e.as_deref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default()
}

/// The text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// The Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics text 1.0 (`application/openmetrics-text`), when the scraper asks for it.
    OpenMetrics,
}

impl MetricsFormat {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> MetricsFormat {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => MetricsFormat::OpenMetrics,
            _ => MetricsFormat::Prometheus,
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            MetricsFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }
}

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `/healthz` and `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // out of file descriptors and the like: try again shortly
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let telemetry = telemetry.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&telemetry, &req);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn answer<B>(telemetry: &Telemetry, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are served\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => {
            let h = telemetry.health();
            let status = if h.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(
                status,
                "text/plain; charset=utf-8",
                format!("{}\n", h.reason),
            )
        }
        "/metrics" => {
            let format = MetricsFormat::from_accept(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            text(
                StatusCode::OK,
                format.content_type(),
                telemetry.metrics(format),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this worker serves /healthz and /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId(id.into())
    }

    #[test]
    fn health_follows_the_loop_and_the_heartbeat() {
        let t = Telemetry::new(Duration::from_millis(200));
        assert!(!t.health().healthy, "{:?}", t.health());
        assert!(t.health().reason.starts_with("starting"));
        t.observe(&WorkerEvent::Started);
        t.observe(&WorkerEvent::Heartbeat {
            state: WorkerState::Online,
        });
        let h = t.health();
        assert!(h.healthy, "{h:?}");
        assert!(h.reason.contains("idle"), "{h:?}");
        t.observe(&WorkerEvent::QueueError {
            error: "connection refused".into(),
        });
        std::thread::sleep(Duration::from_millis(250));
        let h = t.health();
        assert!(!h.healthy, "{h:?}");
        assert!(h.reason.contains("connection refused"), "{h:?}");
        t.observe(&WorkerEvent::Heartbeat {
            state: WorkerState::Online,
        });
        assert!(t.health().healthy);
        t.observe(&WorkerEvent::Stopped { jobs: 0 });
        assert!(!t.health().healthy);
    }

    #[test]
    fn counts_jobs_by_type_and_status_without_job_ids() {
        let t = Telemetry::new(Duration::from_secs(60));
        t.observe(&WorkerEvent::Claimed {
            job: job("j-1"),
            job_type: JobType::Plan,
        });
        let running = t.metrics(MetricsFormat::Prometheus);
        assert!(
            running.contains("tendril_worker_jobs_running{job_type=\"plan\"} 1"),
            "{running}"
        );
        t.observe(&WorkerEvent::Finished {
            job: job("j-1"),
            job_type: JobType::Plan,
            status: JobStatus::Failed,
            reported: true,
            elapsed: Duration::from_secs(7),
        });
        let m = t.metrics(MetricsFormat::Prometheus);
        for want in [
            "tendril_worker_jobs_claimed_total{job_type=\"plan\"} 1",
            "tendril_worker_jobs_finished_total{job_type=\"plan\",status=\"failed\"} 1",
            "tendril_worker_jobs_running{job_type=\"plan\"} 0",
            "tendril_worker_job_duration_seconds_bucket{job_type=\"plan\",le=\"5\"} 0",
            "tendril_worker_job_duration_seconds_bucket{job_type=\"plan\",le=\"10\"} 1",
            "tendril_worker_job_duration_seconds_count{job_type=\"plan\"} 1",
        ] {
            assert!(m.contains(want), "{want} missing from:\n{m}");
        }
        assert!(!m.contains("j-1"), "{m}");
        let om = t.metrics(MetricsFormat::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(
            MetricsFormat::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            MetricsFormat::OpenMetrics
        );
        assert_eq!(
            MetricsFormat::from_accept(Some("text/plain")),
            MetricsFormat::Prometheus
        );
        assert_eq!(MetricsFormat::from_accept(None), MetricsFormat::Prometheus);
    }
}
