//! Where jobs come from and results go.
//!
//! Two queues share one vocabulary (this file):
//!
//! - [`trellis`]: the control plane's worker API over HTTP (`X-Worker-ID` /
//!   `X-Worker-Token`);
//! - [`postgres`]: a PostgreSQL database for self-hosted use without Trellis,
//!   with the schema in `migrations/` and the `claim_next_job` function.
//!
//! [`finalize`] writes a finished DEPLOY job's results into the platform's
//! tables (the control plane's `finalizeDeployment()`).
//!
//! Calls here are single attempts. Each error says whether it is worth retrying
//! ([`QueueError::is_transient`]); the worker loop retries with backoff.

pub mod finalize;
pub mod postgres;
pub mod tls;
pub mod trellis;

use crate::job::{CloudIdentity, Job, JobId, JobStatus};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What can go wrong talking to a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached or answered with a server error: retry later.
    #[error("{what}: the queue is unavailable ({message}); retrying with backoff")]
    Unavailable {
        /// The operation (e.g. `POST /api/jobs/claim`).
        what: String,
        /// The cause.
        message: String,
    },
    /// The queue refused this worker's credentials.
    #[error(
        "{what}: the control plane rejected this worker's credentials (HTTP {status}); \
         check GRAPE_WORKER_ID and GRAPE_WORKER_TOKEN (or --worker-id/--worker-token) \
         and that the worker is registered"
    )]
    Unauthorized {
        /// The operation.
        what: String,
        /// The HTTP status (401 or 403).
        status: u16,
    },
    /// The job is no longer this worker's to run: cancelled upstream, deleted,
    /// or taken back by stale-job recovery.
    #[error("job {job}: {reason}; the worker stops running it")]
    JobGone {
        /// The job.
        job: JobId,
        /// Why (e.g. `cancelled by the control plane (HTTP 409)`).
        reason: String,
    },
    /// The queue answered with something this worker cannot use; retrying will not help.
    #[error("{what}: {message}")]
    Invalid {
        /// The operation.
        what: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A database operation failed.
    #[error("{what}: {source}")]
    Database {
        /// The operation.
        what: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// Finalization found a job it cannot finalize.
    #[error("finalize job {job}: {message}")]
    Finalize {
        /// The job.
        job: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl QueueError {
    /// True for errors worth retrying: network errors, HTTP 5xx and 429, lost
    /// database connections.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Unavailable { .. } => true,
            QueueError::Database { source, .. } => {
                source.is_closed()
                    || source.as_db_error().is_none()
                        && std::error::Error::source(source)
                            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
                    || source.code().is_some_and(|c| {
                        let c = c.code();
                        // connection exceptions, insufficient resources, operator intervention,
                        // serialization failures and deadlocks
                        c.starts_with("08")
                            || c.starts_with("53")
                            || c.starts_with("57")
                            || c == "40001"
                            || c == "40P01"
                    })
            }
            _ => false,
        }
    }

    /// True when the worker's credentials were refused: the worker must stop.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, QueueError::Unauthorized { .. })
    }

    /// True when the job is no longer this worker's (cancelled, gone).
    pub fn is_job_gone(&self) -> bool {
        matches!(self, QueueError::JobGone { .. })
    }

    pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> QueueError {
        let what = what.into();
        move |source| QueueError::Database { what, source }
    }
}

/// Where a job is in its life, as the queues spell it: waiting, taken,
/// running, or ended with a [`JobStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Taken by a worker, not started.
    Claimed,
    /// Running.
    Processing,
    /// Finished successfully.
    Success,
    /// Finished with an error.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl JobState {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Claimed => "CLAIMED",
            JobState::Processing => "PROCESSING",
            JobState::Success => "SUCCESS",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "QUEUED" => JobState::Queued,
            "CLAIMED" => JobState::Claimed,
            "PROCESSING" => JobState::Processing,
            "SUCCESS" => JobState::Success,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<JobStatus> for JobState {
    fn from(s: JobStatus) -> JobState {
        match s {
            JobStatus::Success => JobState::Success,
            JobStatus::Failed => JobState::Failed,
            JobStatus::Cancelled => JobState::Cancelled,
        }
    }
}

/// The result of running one job, as reported to the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// SUCCESS, FAILED (`error_message` says why) or CANCELLED (drain
    /// timeout, control-plane cancel).
    pub status: JobStatus,
    /// Why it failed or was cancelled (the phase is not part of it).
    pub error_message: Option<String>,
    /// The phase the job failed in (`config_hash`, `terraform_apply`, …), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_phase: Option<String>,
    /// The report's `execution_metadata` (see `docs/report.md`); `null` when none.
    pub execution_metadata: serde_json::Value,
}

impl JobOutcome {
    /// A success with the given metadata.
    pub fn success(execution_metadata: serde_json::Value) -> JobOutcome {
        JobOutcome {
            status: JobStatus::Success,
            error_message: None,
            error_phase: None,
            execution_metadata,
        }
    }

    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> JobOutcome {
        JobOutcome {
            status: JobStatus::Failed,
            error_message: Some(message.into()),
            error_phase: None,
            execution_metadata: serde_json::Value::Null,
        }
    }

    /// The same outcome, naming the phase it failed in.
    pub fn in_phase(mut self, phase: Option<String>) -> JobOutcome {
        self.error_phase = phase;
        self
    }

    /// A cancellation with a message.
    pub fn cancelled(message: impl Into<String>) -> JobOutcome {
        JobOutcome {
            status: JobStatus::Cancelled,
            error_message: Some(message.into()),
            error_phase: None,
            execution_metadata: serde_json::Value::Null,
        }
    }
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogStream {
    /// The job's standard output (e.g. terraform's).
    Stdout,
    /// The job's standard error.
    Stderr,
    /// The worker's own notes (phase changes, cancellation, retries).
    System,
}

impl LogStream {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "STDOUT",
            LogStream::Stderr => "STDERR",
            LogStream::System => "SYSTEM",
        }
    }
}

/// A batch of log lines of one stream, already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The text, lines joined with `\n` (ending with one).
    pub log_chunk: String,
    /// The stream.
    pub stream_type: LogStream,
}

/// A worker's state in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkerState {
    /// Claiming and running jobs.
    Online,
    /// Finishing its current job, claiming nothing new.
    Draining,
    /// Stopped (sent by the PostgreSQL queue on exit; Trellis infers it).
    Offline,
}

impl WorkerState {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Online => "ONLINE",
            WorkerState::Draining => "DRAINING",
            WorkerState::Offline => "OFFLINE",
        }
    }
}

/// A claimed job: the first two parts of a job file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedJob {
    /// The job.
    pub job: Job,
    /// Whose cloud credentials it runs with.
    pub cloud_identity: CloudIdentity,
}
