//! A [`JobRunner`] that runs each job in a child process:
//! `tendril plan|deploy --job FILE --output json`.
//!
//! The job file (the claimed job plus the worker's `tendril` part) is written
//! with mode 0600 to the temporary directory and removed when the job ends, so
//! the job's credentials live only in the child and die with it. The child
//! runs in its own process group: cancelling sends SIGINT to the whole group
//! (terraform stops gracefully and releases its lock), and SIGKILL after
//! `cancel_timeout` if it has not exited.
//!
//! The child's stderr (progress, terraform output) is shipped line by line as
//! STDERR. Its stdout is the JSON report and is not shipped (it carries the
//! Argo CD admin password); its `execution_metadata` becomes the job's.

use super::{JobOutcome, JobRunner, RunContext};
use crate::job::{JobFile, JobType};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Runs jobs as child processes of a tendril executable.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    /// The executable (normally this very binary).
    pub exe: PathBuf,
    /// Where job files are written (mode 0600, removed afterwards).
    pub scratch_dir: PathBuf,
    /// How long a cancelled child has after SIGINT before SIGKILL.
    pub cancel_timeout: Duration,
}

impl ProcessRunner {
    /// Runs the current executable, job files in the temporary directory, 2 min to stop.
    pub fn current_exe() -> std::io::Result<ProcessRunner> {
        Ok(ProcessRunner {
            exe: std::env::current_exe()?,
            scratch_dir: std::env::temp_dir(),
            cancel_timeout: Duration::from_secs(120),
        })
    }
}

/// Removes the job file however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals that process group; it
        // has no memory-safety preconditions.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

impl JobRunner for ProcessRunner {
    async fn run(&self, job: JobFile, ctx: RunContext) -> JobOutcome {
        let sub = match job.job.job_type {
            JobType::Plan => "plan",
            JobType::Deploy => "deploy",
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let safe_id: String = job
            .job
            .id
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let path = self.scratch_dir.join(format!(
            "tendril-job-{safe_id}-{}-{nanos}.json",
            std::process::id()
        ));
        let text = match serde_json::to_vec_pretty(&job) {
            Ok(t) => t,
            Err(e) => return JobOutcome::failed(format!("cannot serialize the job file: {e}")),
        };
        drop(job);
        if let Err(e) = write_private(&path, &text) {
            return JobOutcome::failed(format!(
                "cannot write the job file {}: {e}; check that the scratch directory is writable",
                path.display()
            ));
        }
        drop(text);
        let _scratch = Scratch(path.clone());

        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg(sub)
            .arg("--job")
            .arg(&path)
            .args(["--output", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // Cancelling a job is SIGINT to its process group, so the child must
        // not inherit SIGINT ignored: a worker started in the background by a
        // non-interactive shell has it ignored, and a shell script can then
        // not even trap it. The child starts with SIGINT's default action.
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; signal(2) is one, and nothing is allocated.
        unsafe {
            cmd.pre_exec(|| {
                if libc::signal(libc::SIGINT, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return JobOutcome::failed(format!(
                    "cannot start `{} {sub}`: {e}",
                    self.exe.display()
                ));
            }
        };
        let pid = child.id().unwrap_or(0);
        ctx.logs.system(format!(
            "started `tendril {sub} --job <job file> --output json` (pid {pid})"
        ));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return JobOutcome::failed("the child's output pipes are missing");
        };
        let logs = ctx.logs.clone();
        let err_task = tokio::spawn(async move {
            let mut tail: VecDeque<String> = VecDeque::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.stderr(&line);
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail
        });
        let out_task = tokio::spawn(async move {
            let mut buf = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut buf).await;
            buf
        });

        let mut cancelled = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = ctx.cancel.cancelled() => {
                cancelled = true;
                ctx.logs.system("cancelling: SIGINT sent to the job's process group");
                signal_group(pid, libc::SIGINT);
                match tokio::time::timeout(self.cancel_timeout, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        ctx.logs.system(format!(
                            "the job did not stop within {} s of SIGINT; SIGKILL sent",
                            self.cancel_timeout.as_secs()
                        ));
                        signal_group(pid, libc::SIGKILL);
                        child.wait().await
                    }
                }
            }
        };
        let tail = err_task.await.unwrap_or_default();
        let report = out_task.await.unwrap_or_default();
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return JobOutcome::failed(format!("waiting for `tendril {sub}` failed: {e}"));
            }
        };
        let error_line = tail
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .map(str::to_string);
        if cancelled {
            return JobOutcome::cancelled(match error_line {
                Some(e) => format!("`tendril {sub}` was interrupted ({e})"),
                None => format!("`tendril {sub}` was interrupted ({status})"),
            });
        }
        if !status.success() {
            return JobOutcome::failed(
                error_line.unwrap_or_else(|| format!("`tendril {sub}` exited with {status}")),
            );
        }
        let parsed: Option<serde_json::Value> = serde_json::from_str(report.trim()).ok();
        let metadata = parsed
            .as_ref()
            .and_then(|r| r.get("execution_metadata"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if sub == "deploy" && !metadata.is_object() {
            return JobOutcome::failed(
                "`tendril deploy` succeeded but its JSON report has no execution_metadata object (docs/report.md)",
            );
        }
        JobOutcome::success(metadata)
    }
}
