//! `tendril plan`: run a PLAN job from a job file.
//!
//! Progress and a human summary go to stderr; with `--output json|yaml` the report
//! (or, on failure, `{job_id, status, phase, error}`) goes to stdout.
//! SIGINT/SIGTERM cancel the job: terraform is interrupted, stops at a safe
//! point and writes its state, and the job ends CANCELLED (exit code 130).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use tendril::job::JobFile;
use tendril::pipeline::credentials;
use tendril::pipeline::plan::{self, PlanError, PlanEvent, PlanReport};
use tendril::pipeline::result::JobResult;
use tendril::terraform::Event;
use tokio_util::sync::CancellationToken;

pub use super::format::OutputFormat as Output;

/// Flags of `tendril plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The job file (YAML or JSON) of a PLAN job.
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Output format: `json` or `yaml` print the report on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Also write the job's result (status, failed phase, error) as JSON to
    /// this file, mode 0600 (the worker's contract).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,
}

/// Exit code of a cancelled job (as a shell reports SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

fn print_event(event: PlanEvent) {
    match &event {
        // a terminal sees what is running; a log gets one line per phase, when it ends
        PlanEvent::PhaseStarted(phase) if std::io::stderr().is_terminal() => {
            eprintln!("==> {phase}")
        }
        PlanEvent::PhaseStarted(_) => {}
        PlanEvent::PhaseFinished { phase, millis } => eprintln!("==> {phase} done in {millis} ms"),
        PlanEvent::Terraform(e) => match e {
            Event::PlannedChange { address, action } => eprintln!("    {action:>8} {address}"),
            Event::Diagnostic(d) => {
                let addr = d
                    .address
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
                eprintln!("    {}: {}{addr}", d.severity, d.summary);
            }
            Event::Log { message, .. } => eprintln!("    {message}"),
            _ => {}
        },
    }
}

fn print_summary(report: &PlanReport) {
    let s = &report.change_summary;
    eprintln!(
        "Plan: {} to add, {} to change, {} to destroy ({} replaced).",
        s.add, s.change, s.remove, s.replace
    );
    eprintln!(
        "Artifact: {} (sha256 {}, {} bytes)",
        report.artifact.location, report.artifact.plan_sha256, report.artifact.plan_size
    );
    eprintln!("Config hash: {}", report.config_hash);
}

/// Runs `tendril plan`.
pub fn run(args: Args) -> ExitCode {
    let job = match JobFile::load(&args.job) {
        Ok(job) => job,
        Err(e) => return failed_early(&args, None, "job_file", &e),
    };
    let rt = super::runtime();
    let result = rt.block_on(async {
        let creds = match credentials::assume(&job).await {
            Ok(creds) => creds,
            Err(e) => return Err(e),
        };
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(super::cancel_on_signal(
            cancel.clone(),
            super::Signals::install(),
        ));
        let result = plan::run_plan(&job, creds.child_env, &print_event, &cancel).await;
        watcher.abort();
        Ok(result)
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => return failed_early(&args, Some(&job), "credentials", &e),
    };
    write_result(&args, &JobResult::of_plan(&job.job.id.0, &result));
    match result {
        Ok(report) => {
            print_summary(&report);
            match args.output.print(&report) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => super::fail(&e),
            }
        }
        Err(err) => failed(&job, &err, args.output),
    }
}

/// Writes the job's result for `--report-file`; a failure to write is an
/// error on stderr (the worker then reports the job as lost).
fn write_result(args: &Args, result: &JobResult) {
    if let Some(path) = &args.report_file
        && let Err(e) = result.write(path)
    {
        super::fail(&e);
    }
}

/// A job that failed before its phases ran (the file, the credentials): the
/// error on stderr, the result for `--report-file` and, with `-o json|yaml`,
/// the same shape as any failure on stdout.
fn failed_early(
    args: &Args,
    job: Option<&JobFile>,
    phase: &str,
    err: &(dyn std::error::Error + 'static),
) -> ExitCode {
    let job_id = job.map(|j| j.job.id.0.clone());
    let message = tendril::errors::chain_lines(err);
    write_result(
        args,
        &JobResult::failed_early(job_id.as_deref().unwrap_or(""), phase, message.clone()),
    );
    let code = super::fail(err);
    let doc = serde_json::json!({
        "job_id": job_id,
        "status": "FAILED",
        "phase": phase,
        "error": message,
    });
    if let Err(e) = args.output.print(&doc) {
        eprintln!("error: {e}");
    }
    code
}

fn failed(job: &JobFile, err: &PlanError, output: Output) -> ExitCode {
    let cancelled = err.is_cancelled();
    if let Some(stderr) = err.terraform_stderr().filter(|s| !s.trim().is_empty()) {
        eprintln!("terraform stderr:\n{}", stderr.trim_end());
    }
    eprintln!(
        "error: phase {} failed: {}",
        err.phase(),
        tendril::errors::chain_lines(err)
    );
    let doc = serde_json::json!({
        "job_id": job.job.id.0,
        "status": if cancelled { "CANCELLED" } else { "FAILED" },
        "phase": err.phase().as_str(),
        "error": err.to_string(),
    });
    if let Err(e) = output.print(&doc) {
        eprintln!("error: {e}");
    }
    if cancelled {
        eprintln!("job {} CANCELLED", job.job.id);
        ExitCode::from(EXIT_CANCELLED)
    } else {
        ExitCode::FAILURE
    }
}
