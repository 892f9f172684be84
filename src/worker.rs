//! The claim loop, heartbeat, log shipping, graceful shutdown.
//!
//! [`run_worker`] drives one queue ([`JobQueue`]: the Trellis API or the
//! PostgreSQL queue) and one [`JobRunner`] (the PLAN and DEPLOY pipelines):
//!
//! 1. claim a job (`claim_interval` apart while there is none);
//! 2. mark it PROCESSING;
//! 3. run it, shipping its log lines in ordered chunks (every
//!    `log_flush_interval`, or sooner past `log_flush_bytes`), secrets redacted;
//! 4. flush the logs, then report SUCCESS, FAILED or CANCELLED; repeat.
//!
//! A heartbeat (`ONLINE`/`DRAINING` and the current job) goes out every
//! `heartbeat_interval`. Cancelling the `shutdown` token drains: the worker
//! reports DRAINING, claims nothing more, gives the current job
//! `drain_grace` to finish, then cancels it through [`RunContext::cancel`],
//! flushes its logs and reports CANCELLED. A job cancelled upstream is
//! noticed (PostgreSQL: `cancel_requested_at`, polled every
//! `cancel_check_interval`; Trellis: HTTP 409/410 on a log post or status
//! update) and cancelled the same way.
//!
//! Transient queue errors (network, 5xx, lost connections) are retried with
//! exponential backoff and jitter ([`backon`]); logs and the final status are
//! retried until they are delivered, in order, so nothing is lost while the
//! control plane is briefly down. A refused credential (401/403) stops the
//! worker with [`WorkerError::Unauthorized`].
//!
//! [`telemetry`] turns the worker's events into `/healthz` and Prometheus
//! `/metrics` (`tendril worker --listen`).
//!
//! One worker runs one job at a time, so it never runs two jobs of one vine
//! at once; the PostgreSQL queue also enforces that across workers.

pub mod logs;
pub mod process;
pub mod telemetry;

use crate::Secret;
use crate::job::{
    ArtifactStoreConfig, BackendConfig, CloudIdentity, JobFile, JobId, JobStatus, JobType,
    RunnerConfig, SecretValue,
};
use crate::queue::postgres::{JobCheck, PgQueue};
use crate::queue::trellis::TrellisClient;
use crate::queue::{ClaimedJob, JobState, LogChunk, QueueError, WorkerState};
use backon::{ExponentialBuilder, Retryable};
use logs::{Batcher, LogLine, Redactor};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use crate::queue::{JobOutcome, LogStream};
pub use logs::LogSink;

/// What the worker loop can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The queue refused the worker's credentials; the worker stopped.
    #[error("the worker stopped: {0}")]
    Unauthorized(#[source] QueueError),
    /// The worker configuration is unusable.
    #[error("worker configuration: {0}")]
    Config(String),
}

/// What a runner gets besides the job.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Where the job's output goes (STDOUT, STDERR, SYSTEM lines).
    pub logs: LogSink,
    /// Cancelled when the job must stop (drain grace over, cancelled upstream,
    /// credentials refused). A runner stops as soon as it can (terraform gets
    /// SIGINT) and returns [`JobStatus::Cancelled`].
    pub cancel: CancellationToken,
}

/// Runs one job: the seam where the PLAN and DEPLOY pipelines plug in.
///
/// The job file is the claimed job plus the worker's own `tendril` runner
/// configuration. The runner owns it for the run: credentials derived from it
/// are dropped when `run` returns.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs the job to its end and says how it ended.
    fn run(&self, job: JobFile, ctx: RunContext) -> impl Future<Output = JobOutcome> + Send;
}

/// A queue the worker loop can drive (single attempts; the loop retries).
pub trait JobQueue: Send + Sync + 'static {
    /// Claims the next job, or `None`.
    fn claim(&self) -> impl Future<Output = Result<Option<ClaimedJob>, QueueError>> + Send;
    /// Marks the job PROCESSING.
    fn start(&self, job: &JobId) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Ships one log chunk.
    fn send_logs(
        &self,
        job: &JobId,
        chunk: &LogChunk,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Reports the final status.
    fn finish(
        &self,
        job: &JobId,
        outcome: &JobOutcome,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Sends a heartbeat.
    fn heartbeat(
        &self,
        state: WorkerState,
        current: Option<&JobId>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// True when cancellation of the running job was requested upstream.
    fn cancel_requested(
        &self,
        job: &JobId,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;
    /// Periodic upkeep (PostgreSQL: stale-job recovery); returns notes.
    fn housekeeping(
        &self,
        config: &WorkerConfig,
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;
    /// Called once when the worker stops.
    fn stopped(&self) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Whether the queue can be polled for cancellation (else it is only
    /// noticed from answers to log posts and status updates).
    fn polls_cancellation(&self) -> bool;
}

impl JobQueue for TrellisClient {
    async fn claim(&self) -> Result<Option<ClaimedJob>, QueueError> {
        TrellisClient::claim(self).await
    }
    async fn start(&self, job: &JobId) -> Result<(), QueueError> {
        self.update_status(job, JobState::Processing, None, None)
            .await
    }
    async fn send_logs(&self, job: &JobId, chunk: &LogChunk) -> Result<(), QueueError> {
        TrellisClient::send_logs(self, job, chunk).await
    }
    async fn finish(&self, job: &JobId, outcome: &JobOutcome) -> Result<(), QueueError> {
        self.report_outcome(job, outcome).await
    }
    async fn heartbeat(
        &self,
        state: WorkerState,
        current: Option<&JobId>,
    ) -> Result<(), QueueError> {
        TrellisClient::heartbeat(self, state, current).await
    }
    async fn cancel_requested(&self, _job: &JobId) -> Result<bool, QueueError> {
        Ok(false)
    }
    async fn housekeeping(&self, _config: &WorkerConfig) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }
    async fn stopped(&self) -> Result<(), QueueError> {
        Ok(())
    }
    fn polls_cancellation(&self) -> bool {
        false
    }
}

impl JobQueue for PgQueue {
    async fn claim(&self) -> Result<Option<ClaimedJob>, QueueError> {
        PgQueue::claim(self).await
    }
    async fn start(&self, job: &JobId) -> Result<(), QueueError> {
        PgQueue::start(self, job).await
    }
    async fn send_logs(&self, job: &JobId, chunk: &LogChunk) -> Result<(), QueueError> {
        self.append_logs(job, chunk).await
    }
    async fn finish(&self, job: &JobId, outcome: &JobOutcome) -> Result<(), QueueError> {
        PgQueue::finish(self, job, outcome).await
    }
    async fn heartbeat(
        &self,
        state: WorkerState,
        current: Option<&JobId>,
    ) -> Result<(), QueueError> {
        PgQueue::heartbeat(self, state, current).await
    }
    async fn cancel_requested(&self, job: &JobId) -> Result<bool, QueueError> {
        Ok(self.check(job).await? == JobCheck::CancelRequested)
    }
    async fn housekeeping(&self, config: &WorkerConfig) -> Result<Vec<String>, QueueError> {
        let done = self
            .recover_stale(config.stale_heartbeat, config.stale_silence)
            .await?;
        Ok(done
            .into_iter()
            .map(|r| format!("stale job {} {}", r.job, r.action))
            .collect())
    }
    async fn stopped(&self) -> Result<(), QueueError> {
        self.go_offline().await
    }
    fn polls_cancellation(&self) -> bool {
        true
    }
}

/// Backoff for retried queue calls: exponential from `min_delay` to
/// `max_delay`, with jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// The worker's settings. Defaults follow the Trellis worker contract.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The `tendril` part of every job file (the control plane does not send it).
    pub runner: RunnerConfig,
    /// Wait between claims while the queue is empty (10 s).
    pub claim_interval: Duration,
    /// Heartbeat period (30 s).
    pub heartbeat_interval: Duration,
    /// Log chunks go out at least this often (2 s)...
    pub log_flush_interval: Duration,
    /// ...or sooner once this many bytes wait (10 KiB).
    pub log_flush_bytes: usize,
    /// How often the PostgreSQL queue is asked whether the job was cancelled (5 s).
    pub cancel_check_interval: Duration,
    /// How long a draining worker lets its current job run before cancelling it (10 min).
    pub drain_grace: Duration,
    /// Retry backoff.
    pub retry: RetryPolicy,
    /// PostgreSQL stale-job recovery: heartbeat older than this (60 s)...
    pub stale_heartbeat: Duration,
    /// ...or no activity on a job for this long (5 min).
    pub stale_silence: Duration,
    /// Stop once this many jobs ran (`None`: run until shutdown).
    pub max_jobs: Option<usize>,
    /// Stop when a claim finds nothing (drain the queue once, then exit).
    pub exit_when_idle: bool,
    /// Extra values to redact from every log line (e.g. the worker token).
    pub redact: Vec<Secret<String>>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            runner: RunnerConfig::default(),
            claim_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            log_flush_interval: Duration::from_secs(2),
            log_flush_bytes: 10 * 1024,
            cancel_check_interval: Duration::from_secs(5),
            drain_grace: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            stale_heartbeat: Duration::from_secs(60),
            stale_silence: Duration::from_secs(300),
            max_jobs: None,
            exit_when_idle: false,
            redact: Vec::new(),
        }
    }
}

/// Progress of the worker, for the caller to print.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The claim loop started (the queue was opened).
    Started,
    /// A heartbeat reached the queue.
    Heartbeat {
        /// The state it reported.
        state: WorkerState,
    },
    /// A job was claimed.
    Claimed {
        /// The job.
        job: JobId,
        /// PLAN or DEPLOY.
        job_type: JobType,
    },
    /// A job ended and its result was delivered (or could not be).
    Finished {
        /// The job.
        job: JobId,
        /// PLAN or DEPLOY.
        job_type: JobType,
        /// How it ended.
        status: JobStatus,
        /// False when the queue no longer accepted the result (job gone).
        reported: bool,
        /// How long the job ran (from its start to its end, before its
        /// logs and status were delivered).
        elapsed: Duration,
    },
    /// A claimed job was not run (cancelled or taken back before it started).
    Skipped {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// The job is being cancelled.
    Cancelling {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// A queue call failed and will be retried.
    Retrying {
        /// What failed.
        error: String,
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// A queue call failed and was not retried.
    QueueError {
        /// What failed.
        error: String,
    },
    /// Housekeeping did something (stale-job recovery).
    Housekeeping {
        /// What.
        note: String,
    },
    /// Shutdown was requested: no more claims.
    Draining,
    /// The worker stopped.
    Stopped {
        /// Jobs run.
        jobs: usize,
    },
}

/// A progress sink shared by the worker's tasks.
pub type Progress = Arc<dyn Fn(WorkerEvent) + Send + Sync>;

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Jobs run to an outcome.
    pub jobs: usize,
    /// Of which SUCCESS.
    pub succeeded: usize,
    /// Of which FAILED.
    pub failed: usize,
    /// Of which CANCELLED.
    pub cancelled: usize,
}

/// Cancellation signals of a worker.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Drain: stop claiming, let the current job finish within the grace period.
    pub drain: CancellationToken,
    /// Stop now: cancel the current job at once and give up on undelivered
    /// logs and statuses.
    pub now: CancellationToken,
}

struct Shared<Q> {
    queue: Arc<Q>,
    config: WorkerConfig,
    progress: Progress,
    shutdown: Shutdown,
    /// Set when credentials were refused: everything stops.
    fatal: CancellationToken,
    fatal_error: Mutex<Option<QueueError>>,
}

impl<Q: JobQueue> Shared<Q> {
    fn set_fatal(&self, e: QueueError) {
        if let Ok(mut slot) = self.fatal_error.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
        self.fatal.cancel();
    }

    /// Retries `op` on transient errors with backoff, until it succeeds, fails
    /// for good, or `stop` is cancelled (then `None`).
    async fn retry<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        op: F,
    ) -> Option<Result<T, QueueError>>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, QueueError>> + Send,
        T: Send,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry.min_delay)
            .with_max_delay(self.config.retry.max_delay)
            .with_jitter()
            .without_max_times();
        let progress = self.progress.clone();
        let attempt = op
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &QueueError| e.is_transient())
            .notify(move |e, delay| {
                progress(WorkerEvent::Retrying {
                    error: e.to_string(),
                    delay,
                })
            });
        let r = tokio::select! {
            r = attempt => Some(r),
            _ = stop.cancelled() => None,
            _ = self.fatal.cancelled() => None,
        };
        if let Some(Err(QueueError::Unauthorized { what, status })) = &r {
            self.set_fatal(QueueError::Unauthorized {
                what: what.clone(),
                status: *status,
            });
        }
        r
    }
}

/// Runs the worker until `shutdown.drain` (then drains), `max_jobs`, an empty
/// queue with `exit_when_idle`, or refused credentials.
pub async fn run_worker<Q: JobQueue, R: JobRunner>(
    queue: Arc<Q>,
    runner: Arc<R>,
    config: WorkerConfig,
    shutdown: Shutdown,
    progress: Progress,
) -> Result<WorkerSummary, WorkerError> {
    if config.log_flush_interval.is_zero() || config.heartbeat_interval.is_zero() {
        return Err(WorkerError::Config(
            "log flush and heartbeat intervals must be greater than zero".into(),
        ));
    }
    let shared = Arc::new(Shared {
        queue,
        config,
        progress,
        shutdown,
        fatal: CancellationToken::new(),
        fatal_error: Mutex::new(None),
    });
    let (state_tx, state_rx) = watch::channel((WorkerState::Online, None::<JobId>));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        state_rx,
        heartbeat_stop.clone(),
    ));

    (shared.progress)(WorkerEvent::Started);
    let mut summary = WorkerSummary::default();
    loop {
        if shared.shutdown.drain.is_cancelled() || shared.fatal.is_cancelled() {
            break;
        }
        if shared.config.max_jobs.is_some_and(|m| summary.jobs >= m) {
            break;
        }
        let claim = shared
            .retry(&shared.shutdown.drain, || shared.queue.claim())
            .await;
        match claim {
            None => break,
            Some(Ok(Some(claimed))) => {
                let id = claimed.job.id.clone();
                state_tx.send_modify(|s| s.1 = Some(id.clone()));
                if let Some(status) = run_one(&shared, &runner, claimed).await {
                    summary.jobs += 1;
                    match status {
                        JobStatus::Success => summary.succeeded += 1,
                        JobStatus::Failed => summary.failed += 1,
                        JobStatus::Cancelled => summary.cancelled += 1,
                    }
                }
                state_tx.send_modify(|s| s.1 = None);
            }
            Some(Ok(None)) => {
                if shared.config.exit_when_idle {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(shared.config.claim_interval) => {}
                    _ = shared.shutdown.drain.cancelled() => {}
                    _ = shared.fatal.cancelled() => {}
                }
            }
            Some(Err(e)) => {
                if e.is_unauthorized() {
                    break;
                }
                (shared.progress)(WorkerEvent::QueueError {
                    error: e.to_string(),
                });
                tokio::select! {
                    _ = tokio::time::sleep(shared.config.claim_interval) => {}
                    _ = shared.shutdown.drain.cancelled() => {}
                }
            }
        }
    }
    if shared.shutdown.drain.is_cancelled() {
        (shared.progress)(WorkerEvent::Draining);
    }
    // Last word: DRAINING (the worker leaves), then the queue's own goodbye.
    if !shared.fatal.is_cancelled() {
        state_tx.send_modify(|s| s.0 = WorkerState::Draining);
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        if let Some(Ok(())) = shared
            .retry(&shared.shutdown.now, || {
                shared.queue.heartbeat(WorkerState::Draining, None)
            })
            .await
        {
            (shared.progress)(WorkerEvent::Heartbeat {
                state: WorkerState::Draining,
            });
        }
        if let Some(Err(e)) = shared
            .retry(&shared.shutdown.now, || shared.queue.stopped())
            .await
        {
            (shared.progress)(WorkerEvent::QueueError {
                error: e.to_string(),
            });
        }
    } else {
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
    }
    (shared.progress)(WorkerEvent::Stopped { jobs: summary.jobs });
    let fatal = shared.fatal_error.lock().ok().and_then(|mut s| s.take());
    match fatal {
        Some(e) => Err(WorkerError::Unauthorized(e)),
        None => Ok(summary),
    }
}

async fn heartbeat_loop<Q: JobQueue>(
    shared: Arc<Shared<Q>>,
    mut state: watch::Receiver<(WorkerState, Option<JobId>)>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining_sent = false;
    loop {
        let mut ticked = false;
        tokio::select! {
            _ = tick.tick() => ticked = true,
            _ = shared.shutdown.drain.cancelled(), if !draining_sent => {}
            _ = stop.cancelled() => return,
            _ = shared.fatal.cancelled() => return,
        }
        let (mut st, current) = state.borrow_and_update().clone();
        if shared.shutdown.drain.is_cancelled() {
            st = WorkerState::Draining;
            draining_sent = true;
        }
        match shared.queue.heartbeat(st, current.as_ref()).await {
            Ok(()) => (shared.progress)(WorkerEvent::Heartbeat { state: st }),
            Err(e) if e.is_unauthorized() => {
                shared.set_fatal(e);
                return;
            }
            Err(e) => (shared.progress)(WorkerEvent::QueueError {
                error: e.to_string(),
            }),
        }
        if !ticked {
            continue;
        }
        match shared.queue.housekeeping(&shared.config).await {
            Ok(notes) => {
                for note in notes {
                    (shared.progress)(WorkerEvent::Housekeeping { note });
                }
            }
            Err(e) => (shared.progress)(WorkerEvent::QueueError {
                error: e.to_string(),
            }),
        }
    }
}

/// Why the current job was cancelled.
#[derive(Default)]
struct CancelReason(Mutex<Option<String>>);

impl CancelReason {
    fn set(&self, reason: String, token: &CancellationToken) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            token.cancel();
            true
        } else {
            false
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs one claimed job; returns its status when it ran.
async fn run_one<Q: JobQueue, R: JobRunner>(
    shared: &Arc<Shared<Q>>,
    runner: &Arc<R>,
    claimed: ClaimedJob,
) -> Option<JobStatus> {
    let id = claimed.job.id.clone();
    let job_type = claimed.job.job_type;
    (shared.progress)(WorkerEvent::Claimed {
        job: id.clone(),
        job_type,
    });
    match shared
        .retry(&shared.shutdown.now, || shared.queue.start(&id))
        .await
    {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            (shared.progress)(WorkerEvent::Skipped {
                job: id.clone(),
                reason: e.to_string(),
            });
            return None;
        }
        None => return None,
    }

    let job_file = JobFile {
        job: claimed.job,
        cloud_identity: claimed.cloud_identity,
        tendril: shared.config.runner.clone(),
    };
    let mut redactor = Redactor::default();
    for s in job_secrets(&job_file).iter().chain(&shared.config.redact) {
        redactor.add(s.expose());
    }
    let (sink, rx, redactor) = LogSink::channel(redactor);
    let job_redactor = redactor.clone();
    let cancel = CancellationToken::new();
    let reason = Arc::new(CancelReason::default());
    let gone = Arc::new(AtomicBool::new(false));
    let finish_logs = CancellationToken::new();
    let shipper = tokio::spawn(ship_logs(
        shared.clone(),
        id.clone(),
        rx,
        redactor,
        finish_logs.clone(),
        cancel.clone(),
        reason.clone(),
        gone.clone(),
    ));
    let watcher = shared.queue.polls_cancellation().then(|| {
        tokio::spawn(watch_cancel(
            shared.clone(),
            id.clone(),
            cancel.clone(),
            reason.clone(),
            gone.clone(),
        ))
    });
    sink.system(format!(
        "tendril {} running {} job {id}",
        env!("CARGO_PKG_VERSION"),
        job_file.job.job_type
    ));

    let ctx = RunContext {
        logs: sink.clone(),
        cancel: cancel.clone(),
    };
    let r = runner.clone();
    let began = std::time::Instant::now();
    let mut run = tokio::spawn(async move { r.run(job_file, ctx).await });
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let joined = loop {
        tokio::select! {
            // Signals first: a drain that came before the job's end is noted in its log.
            biased;
            _ = shared.shutdown.drain.cancelled(), if grace.is_none() => {
                sink.system(format!(
                    "worker is draining: the job has {} s to finish before it is cancelled",
                    shared.config.drain_grace.as_secs()
                ));
                grace = Some(Box::pin(tokio::time::sleep(shared.config.drain_grace)));
            }
            _ = async { if let Some(g) = grace.as_mut() { g.await } else { std::future::pending().await } }, if !cancel.is_cancelled() => {
                let why = "the worker is shutting down and the drain grace period is over".to_string();
                if reason.set(why.clone(), &cancel) {
                    (shared.progress)(WorkerEvent::Cancelling { job: id.clone(), reason: why });
                }
            }
            _ = shared.shutdown.now.cancelled(), if !cancel.is_cancelled() => {
                let why = "the worker was told to stop now".to_string();
                if reason.set(why.clone(), &cancel) {
                    (shared.progress)(WorkerEvent::Cancelling { job: id.clone(), reason: why });
                }
            }
            _ = shared.fatal.cancelled(), if !cancel.is_cancelled() => {
                reason.set("the control plane refused the worker's credentials".into(), &cancel);
            }
            r = &mut run => break r,
        }
    };
    let elapsed = began.elapsed();
    if let Some(w) = watcher {
        w.abort();
    }
    let mut outcome = match joined {
        Ok(o) => o,
        Err(e) => JobOutcome::failed(format!("the job runner crashed: {e}")),
    };
    if let Some(why) = reason.get() {
        if outcome.status == JobStatus::Failed {
            outcome.status = JobStatus::Cancelled;
        }
        if outcome.status == JobStatus::Cancelled {
            let msg = match outcome.error_message.take() {
                Some(m) if !m.contains(&why) => format!("cancelled: {why} ({m})"),
                Some(m) => m,
                None => format!("cancelled: {why}"),
            };
            outcome.error_message = Some(msg);
        }
    }
    sink.system(format!(
        "job {id} ended {}{}",
        outcome.status,
        outcome
            .error_message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    ));
    drop(sink);
    finish_logs.cancel();
    let _ = shipper.await;

    // Logs first, then the status: retried until delivered.
    let mut final_outcome = outcome.clone();
    if let Some(m) = final_outcome.error_message.take() {
        // The job's secrets (and those it registered) never reach the error either.
        let m = job_redactor
            .lock()
            .map(|r| r.redact(&m))
            .unwrap_or_else(|_| crate::secret::REDACTED.to_string());
        final_outcome.error_message = Some(redact_all(&shared.config, &m));
    }
    let reported = match shared
        .retry(&shared.shutdown.now, || {
            shared.queue.finish(&id, &final_outcome)
        })
        .await
    {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            (shared.progress)(WorkerEvent::QueueError {
                error: e.to_string(),
            });
            false
        }
        None => false,
    };
    (shared.progress)(WorkerEvent::Finished {
        job: id,
        job_type,
        status: outcome.status,
        reported,
        elapsed,
    });
    Some(outcome.status)
}

fn redact_all(config: &WorkerConfig, text: &str) -> String {
    let mut r = Redactor::default();
    for s in &config.redact {
        r.add(s.expose());
    }
    r.redact(text)
}

/// Polls the queue for a cancellation request of the running job.
async fn watch_cancel<Q: JobQueue>(
    shared: Arc<Shared<Q>>,
    id: JobId,
    cancel: CancellationToken,
    reason: Arc<CancelReason>,
    gone: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(
        shared
            .config
            .cancel_check_interval
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let why = match shared.queue.cancel_requested(&id).await {
            Ok(false) => continue,
            Ok(true) => "cancellation was requested by the control plane".to_string(),
            Err(e) if e.is_job_gone() => {
                gone.store(true, Ordering::SeqCst);
                e.to_string()
            }
            Err(e) if e.is_unauthorized() => {
                shared.set_fatal(e);
                continue;
            }
            Err(e) => {
                (shared.progress)(WorkerEvent::QueueError {
                    error: e.to_string(),
                });
                continue;
            }
        };
        if reason.set(why.clone(), &cancel) {
            (shared.progress)(WorkerEvent::Cancelling {
                job: id.clone(),
                reason: why,
            });
        }
        return;
    }
}

/// Batches, redacts and sends the job's log lines, in order, until `finish`
/// and the channel is drained.
#[allow(clippy::too_many_arguments)]
async fn ship_logs<Q: JobQueue>(
    shared: Arc<Shared<Q>>,
    id: JobId,
    mut rx: mpsc::UnboundedReceiver<LogLine>,
    redactor: Arc<Mutex<Redactor>>,
    finish: CancellationToken,
    cancel: CancellationToken,
    reason: Arc<CancelReason>,
    gone: Arc<AtomicBool>,
) {
    let cfg = &shared.config;
    let mut batch = Batcher::new(cfg.log_flush_bytes);
    let mut tick = tokio::time::interval(cfg.log_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut finishing = false;
    loop {
        let mut due = false;
        tokio::select! {
            biased;
            line = rx.recv(), if !finishing => match line {
                Some(l) => batch.push(l.stream, &l.text),
                None => finishing = true,
            },
            _ = tick.tick() => { batch.cut(); due = true; }
            _ = finish.cancelled(), if !finishing => finishing = true,
        }
        if finishing {
            while let Ok(l) = rx.try_recv() {
                batch.push(l.stream, &l.text);
            }
            batch.cut();
            due = true;
        }
        if gone.load(Ordering::SeqCst) {
            batch.clear();
        }
        if due || batch.ready_bytes() >= cfg.log_flush_bytes {
            while let Some(chunk) = batch.front() {
                let mut chunk = chunk.clone();
                chunk.log_chunk = redactor
                    .lock()
                    .map(|r| r.redact(&chunk.log_chunk))
                    .unwrap_or_else(|_| crate::secret::REDACTED.to_string());
                let sent = shared
                    .retry(&shared.shutdown.now, || shared.queue.send_logs(&id, &chunk))
                    .await;
                match sent {
                    Some(Ok(())) => {
                        batch.pop();
                    }
                    Some(Err(e)) if e.is_job_gone() => {
                        gone.store(true, Ordering::SeqCst);
                        batch.clear();
                        let why = e.to_string();
                        if reason.set(why.clone(), &cancel) {
                            (shared.progress)(WorkerEvent::Cancelling {
                                job: id.clone(),
                                reason: why,
                            });
                        }
                    }
                    Some(Err(e)) => {
                        // Not retryable (bad request, refused credentials): drop
                        // this chunk, say so, keep the rest flowing.
                        (shared.progress)(WorkerEvent::QueueError {
                            error: e.to_string(),
                        });
                        batch.pop();
                        if shared.fatal.is_cancelled() {
                            batch.clear();
                        }
                    }
                    None => {
                        // Stopping now, or credentials refused: give up on the rest.
                        batch.clear();
                        if !finishing {
                            reason.set("log shipping stopped".into(), &cancel);
                        }
                    }
                }
            }
        }
        if finishing && batch.is_empty() {
            return;
        }
    }
}

/// The secret values of a job file, to redact from its logs.
pub fn job_secrets(job: &JobFile) -> Vec<Secret<String>> {
    let mut out = Vec::new();
    if let CloudIdentity::Aws {
        external_id: Some(x),
        ..
    } = &job.cloud_identity
    {
        out.push(x.clone());
    }
    let t = &job.tendril;
    let mut values: Vec<&SecretValue> = Vec::new();
    if let BackendConfig::S3(s3) = &t.terraform.backend {
        values.extend(s3.access_key_id.iter().chain(&s3.secret_access_key));
    }
    if let ArtifactStoreConfig::Supabase {
        service_key: Some(k),
        ..
    } = &t.artifacts
    {
        values.push(k);
    }
    values.extend(&t.argocd.admin_password);
    if let Some(c) = &t.apps.credentials {
        values.extend(c.password.iter().chain(&c.token));
    }
    for v in values {
        if let Ok(s) = v.resolve("secret") {
            out.push(s);
        }
    }
    out
}
