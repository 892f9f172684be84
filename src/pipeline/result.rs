//! What a job process hands its supervisor: the typed end of a job.
//!
//! `tendril plan|deploy|destroy --report-file PATH` writes one [`JobResult`] as JSON
//! to PATH (created with mode 0600) when the job ends, whatever the outcome;
//! the worker reads it back with [`JobResult::read`]. No output is parsed
//! from text: the status, the phase that failed, the error and the
//! `execution_metadata` travel as fields.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JobReport, JobStatus};

/// The end of one job, as the job process reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: String,
    /// SUCCESS, FAILED or CANCELLED.
    pub status: JobStatus,
    /// The name of the phase that failed (`config_hash`, `terraform_apply`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What went wrong, without the phase (it is in `phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The report's `execution_metadata` (see `docs/report.md`).
    #[serde(default)]
    pub execution_metadata: Value,
}

/// Why a result file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The file could not be written or read.
    #[error("job result file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a job result.
    #[error("job result file {path} is not a job result: {source}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl JobResult {
    /// The result of a job of any type, from its report.
    pub fn of(report: &JobReport) -> JobResult {
        JobResult {
            job_id: report.job_id.clone(),
            status: report.status,
            phase: report.failed_phase.map(|p| p.name().to_string()),
            error: report.error_without_phase(),
            execution_metadata: report.execution_metadata.clone(),
        }
    }

    /// Writes the result to `path` (created or truncated, mode 0600).
    pub fn write(&self, path: &Path) -> Result<(), ResultError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| ResultError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec(self).map_err(|source| ResultError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a result written by [`JobResult::write`].
    pub fn read(path: &Path) -> Result<JobResult, ResultError> {
        let bytes = std::fs::read(path).map_err(|source| ResultError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ResultError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}
