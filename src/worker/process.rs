//! A [`JobRunner`] that runs each job in a child process:
//! `tendril plan|deploy --job /dev/stdin --report-file FILE`.
//!
//! - The job file (the claimed job plus the worker's `tendril` part) goes to
//!   the child through a pipe on its stdin: the job's credentials are never
//!   written to disk by the worker, and live only in the child.
//! - Each job gets a private scratch directory (mode 0700) that the worker
//!   owns and removes when the job ends, however it ends: the child's
//!   `TMPDIR` (terraform's workspace, the downloaded plan, state credentials
//!   live there) and the result file.
//! - The child writes its end as a [`JobResult`] (status, failed phase,
//!   error, `execution_metadata`) to the result file; the worker reads it
//!   back. Nothing is parsed from the child's text output.
//! - The child runs in its own process group with a parent-death signal
//!   ([`isolate`]): if the worker dies, the job is interrupted as by a
//!   cancel, and the child interrupts its terraform the same way.
//! - Every process of the job carries the job's [`JobScope`] token in its
//!   environment. When the child has exited (normally or not), whatever is
//!   left of the job (a terraform whose `tendril deploy` was killed, a
//!   provisioner) is interrupted, then killed after `cancel_timeout`; the job
//!   is reported only when no process of it is left on this host.
//! - Cancelling sends SIGINT to the child's process group (terraform stops
//!   gracefully and releases its lock), SIGKILL after `cancel_timeout`.
//!
//! The child's stderr (progress, every terraform event) goes to a file in
//! the scratch directory, not a pipe, and is shipped line by line as STDERR
//! while the child runs; its stdout is not read. A file outlives its reader:
//! if the worker dies, the child's next progress line does not fail with a
//! broken pipe while it interrupts its terraform and waits for the state to
//! be written.

use super::{JobOutcome, JobRunner, RunContext};
use crate::job::{JobFile, JobStatus, JobType};
use crate::pipeline::result::JobResult;
use crate::terraform::process::{
    GroupGuard, GroupSignal, JobScope, ProcessGroup, SCOPE_ENV, isolate,
};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The prefix of a job's scratch directory: `tendril-job-<worker pid>-<job>-<random>`.
const SCRATCH_PREFIX: &str = "tendril-job-";

/// The `tendril` subcommand that runs a job of this type: the one place that
/// maps job types to commands (also the `job_type` label of the worker's
/// metrics).
pub fn subcommand(job_type: JobType) -> &'static str {
    match job_type {
        JobType::Plan => "plan",
        JobType::Deploy => "deploy",
        JobType::Destroy => "destroy",
    }
}

/// Runs jobs as child processes of a tendril executable.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    /// The executable (normally this very binary).
    pub exe: PathBuf,
    /// Where each job's private scratch directory is made (and removed).
    pub scratch_dir: PathBuf,
    /// How long a cancelled child, or a leftover of a job, has after SIGINT
    /// before SIGKILL.
    pub cancel_timeout: Duration,
}

impl ProcessRunner {
    /// Runs the current executable, scratch in the temporary directory, 2 min to stop.
    pub fn current_exe() -> std::io::Result<ProcessRunner> {
        Ok(ProcessRunner {
            exe: std::env::current_exe()?,
            scratch_dir: std::env::temp_dir(),
            cancel_timeout: Duration::from_secs(120),
        })
    }

    /// Removes the scratch directories that workers no longer running on
    /// this host left behind (a worker killed by SIGKILL cannot clean up);
    /// returns how many were removed.
    pub fn remove_stale_scratch(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.scratch_dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let alive =
                owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists();
            // The job of a killed worker may still be stopping (terraform
            // writing its state): its workspace stays until it is gone.
            if !alive && !job_processes_of(owner) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Whether a process of a job that the worker with this pid started is
/// still running on this host (its [`JobScope`] token starts with that pid).
fn job_processes_of(worker: u32) -> bool {
    let needle = format!("{SCOPE_ENV}={worker}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .any(|e| {
            std::fs::read(e.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(needle.as_bytes()))
            })
        })
}

/// A job's private directory; removed (with everything in it) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(root: &Path, job: &str) -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let safe: String = job
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
        let dir = root.join(format!(
            "{SCRATCH_PREFIX}{}-{safe}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let scratch = Scratch(dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(scratch.tmp())?;
        Ok(scratch)
    }

    fn tmp(&self) -> PathBuf {
        self.0.join("tmp")
    }

    fn result(&self) -> PathBuf {
        self.0.join("result.json")
    }

    fn stderr(&self) -> PathBuf {
        self.0.join("stderr.log")
    }
}

/// Ships the lines of the child's stderr file as they are written, until
/// `done` (then the rest, an unterminated last line included).
async fn follow_stderr(
    path: PathBuf,
    logs: super::LogSink,
    done: tokio_util::sync::CancellationToken,
) {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(&path) else {
        logs.system(format!(
            "cannot read the job's stderr file {}",
            path.display()
        ));
        return;
    };
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let at_end = done.is_cancelled();
        while let Ok(n) = file.read(&mut chunk) {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
        }
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            logs.stderr(String::from_utf8_lossy(&line[..i]));
        }
        if at_end {
            if !pending.is_empty() {
                logs.stderr(String::from_utf8_lossy(&pending));
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(STDERR_POLL) => {}
            _ = done.cancelled() => {}
        }
    }
}

/// How often the child's stderr file is read.
const STDERR_POLL: Duration = Duration::from_millis(100);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates `path` for writing, readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// How the child process ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Lost(std::io::Error),
}

impl JobRunner for ProcessRunner {
    async fn run(&self, job: JobFile, ctx: RunContext) -> JobOutcome {
        let sub = subcommand(job.job.job_type);
        let text = match serde_json::to_vec(&job) {
            Ok(t) => t,
            Err(e) => return JobOutcome::failed(format!("cannot serialize the job file: {e}")),
        };
        let scratch = match Scratch::create(&self.scratch_dir, &job.job.id.0) {
            Ok(s) => s,
            Err(e) => {
                return JobOutcome::failed(format!(
                    "cannot create the job's scratch directory in {}: {e}; check that it exists and is writable",
                    self.scratch_dir.display()
                ));
            }
        };
        drop(job);
        let stderr_file = match create_private(&scratch.stderr()) {
            Ok(f) => f,
            Err(e) => {
                return JobOutcome::failed(format!(
                    "cannot create the job's stderr file in {}: {e}",
                    self.scratch_dir.display()
                ));
            }
        };
        let scope = JobScope::new();
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg(sub)
            .args(["--job", "/dev/stdin", "--report-file"])
            .arg(scratch.result())
            .env(SCOPE_ENV, scope.token())
            .env("TMPDIR", scratch.tmp())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        isolate(&mut cmd, GroupSignal::Interrupt);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return JobOutcome::failed(format!(
                    "cannot start `{} {sub}`: {e}",
                    self.exe.display()
                ));
            }
        };
        let group = ProcessGroup::led_by(child.id());
        let mut guard = GroupGuard::new(group);
        ctx.logs.system(format!(
            "started `tendril {sub} --job /dev/stdin --report-file <scratch>/result.json` (pid {})",
            child.id().unwrap_or(0)
        ));
        let Some(mut stdin) = child.stdin.take() else {
            return JobOutcome::failed("the child's stdin pipe is missing");
        };
        let feed = tokio::spawn(async move {
            let r = stdin.write_all(&text).await;
            drop(stdin);
            r
        });
        let stderr_done = tokio_util::sync::CancellationToken::new();
        let err_task = tokio::spawn(follow_stderr(
            scratch.stderr(),
            ctx.logs.clone(),
            stderr_done.clone(),
        ));

        let mut cancelled = false;
        let waited = tokio::select! {
            s = child.wait() => s,
            _ = ctx.cancel.cancelled() => {
                cancelled = true;
                ctx.logs.system("cancelling: SIGINT sent to the job's process group");
                if let Some(g) = group {
                    g.signal(GroupSignal::Interrupt);
                }
                match tokio::time::timeout(self.cancel_timeout, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        ctx.logs.system(format!(
                            "the job did not stop within {} s of SIGINT; SIGKILL sent",
                            self.cancel_timeout.as_secs()
                        ));
                        if let Some(g) = group {
                            g.signal(GroupSignal::Kill);
                        }
                        child.wait().await
                    }
                }
            }
        };
        let ended = match waited {
            Ok(s) => Ended::Exited(s),
            Err(e) => Ended::Lost(e),
        };
        let fed = feed.await;
        // Nothing of the job may outlive it: a terraform whose parent died,
        // a provisioner terraform abandoned.
        let end = scope.end(self.cancel_timeout).await;
        if end.leftovers > 0 {
            ctx.logs.system(format!(
                "{} process(es) of the job were still running after `tendril {sub}` ended: interrupted{}",
                end.leftovers,
                if end.killed > 0 {
                    format!(", {} killed after {} s", end.killed, self.cancel_timeout.as_secs())
                } else {
                    String::new()
                }
            ));
        }
        if let Some(g) = group {
            g.signal(GroupSignal::Kill);
        }
        guard.disarm();
        stderr_done.cancel();
        let _ = err_task.await;
        if end.remaining > 0 {
            return JobOutcome::failed(format!(
                "{} process(es) of the job could not be stopped; the job's state may still change: \
                 stop them before re-running the vine",
                end.remaining
            ));
        }
        let result = JobResult::read(&scratch.result());
        drop(scratch);
        let status = match ended {
            Ended::Exited(s) => s,
            Ended::Lost(e) => {
                return JobOutcome::failed(format!("waiting for `tendril {sub}` failed: {e}"));
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let why = match fed {
                    Ok(Err(w)) => format!("; the job file could not be sent to it: {w}"),
                    _ => String::new(),
                };
                let msg = format!(
                    "`tendril {sub}` ended ({status}) without writing its result ({e}){why}"
                );
                return if cancelled {
                    JobOutcome::cancelled(msg)
                } else {
                    JobOutcome::failed(msg)
                };
            }
        };
        outcome_of(sub, result, cancelled)
    }
}

/// The worker's outcome for the child's result.
fn outcome_of(sub: &str, result: JobResult, cancelled: bool) -> JobOutcome {
    let message = result
        .error
        .unwrap_or_else(|| format!("`tendril {sub}` failed without saying why"));
    match result.status {
        JobStatus::Success if cancelled => JobOutcome::success(result.execution_metadata),
        JobStatus::Success => {
            if sub == "deploy" && !result.execution_metadata.is_object() {
                return JobOutcome::failed(
                    "`tendril deploy` succeeded but its result has no execution_metadata object (docs/report.md)",
                );
            }
            JobOutcome::success(result.execution_metadata)
        }
        JobStatus::Failed if !cancelled => JobOutcome::failed(message).in_phase(result.phase),
        JobStatus::Failed | JobStatus::Cancelled => {
            JobOutcome::cancelled(message).in_phase(result.phase)
        }
    }
}
