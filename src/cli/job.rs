//! What the job commands (`plan`, `deploy`, `destroy`) share: progress on
//! stderr, the summary, `-o json|yaml` on stdout, the worker's
//! `--report-file`, and the exit code (0 success, 1 failed, 130 cancelled).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tendril::apply::ApplyEvent;
use tendril::job::{JobFile, JobType};
use tendril::pipeline::result::JobResult;
use tendril::pipeline::{JobEvent, JobReport, JobStatus, Phase, RunMode};
use tendril::teardown::TeardownEvent;
use tokio_util::sync::CancellationToken;

use super::format::OutputFormat;
use super::progress::{Progress, human};

/// Exit code of a cancelled job (as a shell reports SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

/// Loads the job file, or the FAILED report of an unreadable one.
pub fn load(path: &Path, job_type: JobType, mode: RunMode) -> Result<JobFile, Box<JobReport>> {
    JobFile::load(path).map_err(|e| Box::new(JobReport::unreadable_job(&e, job_type, mode)))
}

/// Runs one job's pipeline on a runtime, with SIGINT/SIGTERM cancelling it.
pub fn block_on_cancellable<F, Fut>(pipeline: F) -> JobReport
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = JobReport>,
{
    let rt = super::runtime();
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(super::cancel_on_signal(
            cancel.clone(),
            super::Signals::install(),
        ));
        let report = pipeline(cancel).await;
        watcher.abort();
        report
    })
}

/// Progress for a job of these phases on stderr.
pub fn progress(phases: &[Phase]) -> Progress {
    Progress::new(phases.len())
}

/// Shows one job event.
pub fn show(progress: &Progress, event: &JobEvent) {
    match event {
        JobEvent::Phase(p) => progress.phase(p),
        JobEvent::Terraform(e) => progress.terraform(e),
        JobEvent::Apply(e) => match e {
            ApplyEvent::Planned { objects, waves } => {
                progress.detail(&format!("{objects} objects in {waves} waves"))
            }
            ApplyEvent::Applied {
                object,
                action,
                error,
            } => match error {
                Some(err) => progress.line(&format!("      {object}: {} ({err})", action.as_str())),
                None => progress.detail(&format!("{object} {}", action.as_str())),
            },
            ApplyEvent::Waiting { objects } => {
                progress.detail(&format!("waiting for {objects} objects to be ready"))
            }
            ApplyEvent::Progress { object, reason } => {
                progress.detail(&format!("{object}: {reason}"))
            }
            ApplyEvent::Ready { object } => progress.detail(&format!("{object} ready")),
            ApplyEvent::NotReady { object, reason } => {
                progress.line(&format!("      {object} failed: {reason}"))
            }
            _ => {}
        },
        JobEvent::Teardown(e) => match e {
            TeardownEvent::Stage(stage) => progress.detail(stage.as_str()),
            TeardownEvent::Skipped { stage, reason } => {
                progress.line(&format!("      {}: skipped ({reason})", stage.as_str()))
            }
            TeardownEvent::FinalizerAdded(app) => {
                progress.detail(&format!("{app}: Argo CD's resources finalizer added"))
            }
            TeardownEvent::DeleteSent { object, .. } => {
                progress.detail(&format!("{object} deleting"))
            }
            TeardownEvent::Waiting { kind, objects } => {
                progress.detail(&format!("waiting for {objects} {kind} to be gone"))
            }
            TeardownEvent::Gone(object) => progress.detail(&format!("{object} gone")),
            TeardownEvent::Remains { object, reason } => {
                progress.line(&format!("      {object} remains: {reason}"))
            }
        },
        JobEvent::Note(n) => progress.line(&format!("      note: {n}")),
    }
}

/// Writes one line to stderr; a closed stderr (a supervisor that died) is
/// not a reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// The human summary on stderr.
fn summary(report: &JobReport) {
    say!();
    let kind = report.job_type;
    if report.job_id.is_empty() {
        // the job file could not be read: there is only the error
        if let Some(e) = &report.error {
            say!("{kind} FAILED\nerror: {e}");
        }
        return;
    }
    match report.status {
        JobStatus::Success if report.is_dry_run() => {
            say!(
                "{kind} {} SUCCESS (dry run: nothing changed)",
                report.job_id
            )
        }
        JobStatus::Success => say!("{kind} {} SUCCESS", report.job_id),
        JobStatus::Failed => say!("{kind} {} FAILED", report.job_id),
        JobStatus::Cancelled => say!("{kind} {} CANCELLED", report.job_id),
    }
    if let Some(c) = &report.change_summary {
        let verb = if c.applied { "changed" } else { "planned" };
        say!(
            "  terraform {verb}: {} to add, {} to change, {} to destroy",
            c.add,
            c.change,
            c.remove
        );
    }
    if let Some(a) = &report.artifact {
        say!(
            "  artifact  {} (sha256 {}, {} bytes)",
            a.location,
            a.plan_sha256,
            a.plan_size
        );
    }
    if let Some(h) = &report.config_hash {
        say!("  config    {h}");
    }
    if let Some(c) = &report.cluster {
        say!(
            "  cluster   {} ({})",
            c.name,
            c.endpoint.as_deref().unwrap_or("no endpoint")
        );
    }
    if let Some(a) = &report.argocd
        && !a.url.is_empty()
    {
        say!("  argocd    {}", a.url);
        say!(
            "  password  {}",
            if a.admin_password.is_some() {
                "in the report (--output json)"
            } else {
                "not retrievable"
            }
        );
    }
    let total: u64 = report.timings.iter().map(|t| t.millis).sum();
    if !report.timings.is_empty() {
        say!(
            "  timings   {} total: {}",
            human(Duration::from_millis(total)),
            report
                .timings
                .iter()
                .map(|t| format!("{} {}", t.phase, human(Duration::from_millis(t.millis))))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for w in &report.warnings {
        say!("  warning   {w}");
    }
    if let Some(e) = &report.error {
        say!("error: {e}");
    }
}

/// Writes the worker's `--report-file`, prints the summary and the report
/// (`-o json|yaml`), and maps the report's status to an exit code.
pub fn finish(report: &JobReport, output: OutputFormat, report_file: Option<&PathBuf>) -> ExitCode {
    // the supervisor's file first: it must not depend on stderr being open
    if let Some(path) = report_file
        && let Err(e) = JobResult::of(report).write(path)
    {
        return super::fail(&e);
    }
    summary(report);
    if let Err(e) = output.print(report) {
        return super::fail(&e);
    }
    match report.status {
        JobStatus::Success => ExitCode::SUCCESS,
        JobStatus::Failed => ExitCode::FAILURE,
        JobStatus::Cancelled => ExitCode::from(EXIT_CANCELLED),
    }
}
