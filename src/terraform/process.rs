//! Child processes that never outlive the job they belong to.
//!
//! One helper for every process tendril starts on a job's behalf (terraform,
//! and in worker mode the `tendril plan|deploy` job process itself):
//!
//! - [`isolate`] prepares a command: the child leads its own process group
//!   (so a signal reaches everything it starts: provider plugins,
//!   `local-exec` shells), receives a *parent-death signal* when the thread
//!   that started it dies (SIGKILL of the supervisor included), and starts
//!   with SIGINT's default action even when the supervisor ignores SIGINT;
//! - [`ProcessGroup`] signals such a group, and [`GroupGuard`] kills it when a
//!   run is abandoned;
//! - [`JobScope`] marks every process of one job with an environment
//!   variable ([`SCOPE_ENV`]) and finds them again, wherever they were
//!   re-parented: a supervisor whose child died abnormally interrupts what
//!   is left of the job (SIGINT to each leftover's process group, so
//!   terraform writes its state), kills what did not stop within a bound,
//!   and only then declares the job over.
//!
//! Linux only (`prctl(PR_SET_PDEATHSIG)`, `/proc`).

use rustix::process::{Pid, Signal};
use std::time::Duration;

/// The environment variable that carries a job's scope token to every process
/// of the job (terraform passes its environment on to providers and
/// provisioners).
pub const SCOPE_ENV: &str = "TENDRIL_JOB_SCOPE";

/// A signal tendril sends to its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    /// SIGINT: stop at a safe point (terraform writes its state).
    Interrupt,
    /// SIGKILL: stop now.
    Kill,
}

impl GroupSignal {
    fn raw(self) -> Signal {
        match self {
            GroupSignal::Interrupt => Signal::INT,
            GroupSignal::Kill => Signal::KILL,
        }
    }
}

/// Prepares `cmd` so that its child leads a new process group, gets
/// `on_parent_death` when the thread that spawns it dies, and starts with
/// SIGINT's default action. The command is also killed when its handle is
/// dropped.
pub fn isolate(cmd: &mut tokio::process::Command, on_parent_death: GroupSignal) {
    let parent = rustix::process::getpid();
    let signal = on_parent_death.raw();
    cmd.process_group(0).kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls are allowed:
    // prctl(2), getppid(2) and signal(2) are system calls, and nothing here
    // allocates (the error is a plain kind, no heap).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(signal))?;
            // The parent may have died before the death signal was armed.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::ErrorKind::Other.into());
            }
            // A supervisor started in the background by a non-interactive
            // shell has SIGINT ignored, and an ignored signal stays ignored
            // across exec: interrupting the job would then do nothing.
            if libc::signal(libc::SIGINT, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The process group of a child started through [`isolate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup(Pid);

impl ProcessGroup {
    /// The group led by the child with this pid.
    pub fn led_by(pid: Option<u32>) -> Option<ProcessGroup> {
        pid.and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
            .map(ProcessGroup)
    }

    /// Sends `signal` to every process of the group (a group already gone is fine).
    pub fn signal(self, signal: GroupSignal) {
        let _ = rustix::process::kill_process_group(self.0, signal.raw());
    }
}

/// Kills a process group when dropped, unless [`GroupGuard::disarm`]ed: a
/// run whose future is dropped leaves nothing behind.
#[derive(Debug)]
pub struct GroupGuard(Option<ProcessGroup>);

impl GroupGuard {
    /// Guards `group`.
    pub fn new(group: Option<ProcessGroup>) -> GroupGuard {
        GroupGuard(group)
    }

    /// Stops guarding (the group was dealt with).
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.signal(GroupSignal::Kill);
        }
    }
}

/// How a job's leftover processes were ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeEnd {
    /// Processes that were still running when the job's own process had ended.
    pub leftovers: usize,
    /// Of which, processes that had to be killed after the grace period.
    pub killed: usize,
    /// Processes still there after the kill (a process stuck in the kernel).
    pub remaining: usize,
}

/// Every process of one job, found by the [`SCOPE_ENV`] token in its
/// environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScope {
    token: String,
}

impl JobScope {
    /// A new, unique scope.
    pub fn new() -> JobScope {
        JobScope {
            token: format!(
                "{}-{:016x}",
                rustix::process::getpid().as_raw_nonzero(),
                rand::random::<u64>()
            ),
        }
    }

    /// The token (the value of [`SCOPE_ENV`] in the job's processes).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The live processes of this scope (zombies have no environment left
    /// and are not counted: they can no longer run).
    pub fn processes(&self) -> Vec<Pid> {
        let needle = format!("{SCOPE_ENV}={}", self.token);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
            })
            .filter_map(Pid::from_raw)
            .collect()
    }

    /// Ends whatever is left of the job: SIGINT to the process group of each
    /// leftover (terraform stops and writes its state), up to `grace` for
    /// them to exit, then SIGKILL and up to 5 s more.
    pub async fn end(&self, grace: Duration) -> ScopeEnd {
        let left = self.processes();
        let mut end = ScopeEnd {
            leftovers: left.len(),
            ..ScopeEnd::default()
        };
        if left.is_empty() {
            return end;
        }
        for pid in &left {
            match rustix::process::getpgid(Some(*pid)) {
                Ok(group) if group == *pid || !left.contains(&group) => {
                    let _ = rustix::process::kill_process_group(group, Signal::INT);
                }
                _ => {
                    let _ = rustix::process::kill_process(*pid, Signal::INT);
                }
            }
        }
        if self.wait_empty(grace).await {
            return end;
        }
        let stuck = self.processes();
        end.killed = stuck.len();
        for pid in stuck {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        if !self.wait_empty(Duration::from_secs(5)).await {
            end.remaining = self.processes().len();
        }
        end
    }

    async fn wait_empty(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if self.processes().is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Default for JobScope {
    fn default() -> Self {
        JobScope::new()
    }
}
