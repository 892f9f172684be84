//! `tendril plan`: run a PLAN job from a job file.
//!
//! Progress and a human summary go to stderr; with `--output json|yaml` the
//! report goes to stdout. SIGINT/SIGTERM cancel the job: terraform is
//! interrupted, stops at a safe point and writes its state, and the job ends
//! CANCELLED (exit code 130).

use std::path::PathBuf;
use std::process::ExitCode;

use tendril::job::JobType;
use tendril::pipeline::{JobEvent, RunMode, plan};

use super::format::OutputFormat;

/// Flags of `tendril plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The job file (YAML or JSON) of a PLAN job.
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Output format: `json` or `yaml` print the report on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Also write the job's result (status, failed phase, error) as JSON to
    /// this file, mode 0600 (the worker's contract).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,
}

/// Runs `tendril plan`.
pub fn run(args: Args) -> ExitCode {
    let job = match super::job::load(&args.job, JobType::Plan, RunMode::Apply) {
        Ok(job) => job,
        Err(report) => return super::job::finish(&report, args.output, args.report_file.as_ref()),
    };
    let progress = super::job::progress(plan::PHASES);
    let sink = |e: JobEvent| super::job::show(&progress, &e);
    let report = super::job::block_on_cancellable(|cancel| async move {
        plan::run_plan(&job, &sink, &cancel).await
    });
    super::job::finish(&report, args.output, args.report_file.as_ref())
}
