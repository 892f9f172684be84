//! `tendril plan`: run a PLAN job from a job file.
//!
//! Progress and a human summary go to stderr; with `--output json` the report
//! (or, on failure, `{job_id, status, phase, error}`) goes to stdout.
//! SIGINT/SIGTERM cancel the job: terraform is interrupted, stops at a safe
//! point and writes its state, and the job ends CANCELLED (exit code 130).

use std::path::PathBuf;
use std::process::ExitCode;

use tendril::job::JobFile;
use tendril::pipeline::credentials;
use tendril::pipeline::plan::{self, PlanError, PlanEvent, PlanReport};
use tendril::terraform::Event;
use tokio_util::sync::CancellationToken;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A human summary on stderr.
    Text,
    /// The JSON report on stdout (the human summary still goes to stderr).
    Json,
}

/// Flags of `tendril plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The job file (YAML or JSON) of a PLAN job.
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Exit code of a cancelled job (as a shell reports SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

fn print_event(event: PlanEvent) {
    match &event {
        PlanEvent::PhaseStarted(phase) => eprintln!("==> {phase}"),
        PlanEvent::PhaseFinished { phase, millis } => eprintln!("    {phase} done in {millis} ms"),
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
        Err(e) => return failed_early(None, "config", &e, args.output),
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
        Err(e) => return failed_early(Some(&job), "credentials", &e, args.output),
    };
    match result {
        Ok(report) => {
            print_summary(&report);
            if args.output == Output::Json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return super::fail(&e),
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => failed(&job, &err, args.output),
    }
}

/// A job that failed before its phases ran (the file, the credentials): the
/// error on stderr and, with `--output json`, the same JSON shape as any
/// failure on stdout.
fn failed_early(
    job: Option<&JobFile>,
    phase: &str,
    err: &(dyn std::error::Error + 'static),
    output: Output,
) -> ExitCode {
    let code = super::fail(err);
    if output == Output::Json {
        let doc = serde_json::json!({
            "job_id": job.map(|j| j.job.id.0.clone()),
            "status": "FAILED",
            "phase": phase,
            "error": tendril::errors::chain_lines(err),
        });
        println!("{doc:#}");
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
    if output == Output::Json {
        let doc = serde_json::json!({
            "job_id": job.job.id.0,
            "status": if cancelled { "CANCELLED" } else { "FAILED" },
            "phase": err.phase().as_str(),
            "error": err.to_string(),
        });
        println!("{doc:#}");
    }
    if cancelled {
        eprintln!("job {} CANCELLED", job.job.id);
        ExitCode::from(EXIT_CANCELLED)
    } else {
        ExitCode::FAILURE
    }
}
