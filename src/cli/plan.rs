//! `tendril plan`: run a PLAN job from a job file.
//!
//! Progress and a human summary go to stderr; with `--output json` the report
//! (or, on failure, `{job_id, status, phase, error}`) goes to stdout.
//! SIGINT/SIGTERM cancel the job: terraform is interrupted, stops at a safe
//! point and writes its state, and the job ends CANCELLED (exit code 130).

use std::path::PathBuf;
use std::process::ExitCode;

use tendril::Secret;
use tendril::job::{CloudIdentity, JobFile};
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
const EXIT_CANCELLED: u8 = 130;

/// The environment terraform gets for this job's cloud identity.
///
/// Provider `local` passes the cloud SDK variables of tendril's own
/// environment ([`plan::local_child_env`]). The other providers need
/// credentials assumed from the cloud identity; that is
/// `pipeline::credentials`' job and is wired here when it lands.
fn terraform_child_env(job: &JobFile) -> Result<Vec<(String, Secret<String>)>, String> {
    match &job.cloud_identity {
        CloudIdentity::Local => Ok(plan::local_child_env()),
        other => Err(format!(
            "cloud identity provider `{}` is not available in `tendril plan` of this build yet; \
             use `cloud_identity: {{provider: local}}` and give terraform its credentials through \
             the environment (AWS_*, GOOGLE_*, ARM_* variables)",
            other.provider()
        )),
    }
}

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
        Err(e) => return super::fail(&e),
    };
    let child_env = match terraform_child_env(&job) {
        Ok(env) => env,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let rt = super::runtime();
    let result = rt.block_on(async {
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(cancel_on_signal(cancel.clone(), Signals::install()));
        let result = plan::run_plan(&job, child_env, &print_event, &cancel).await;
        watcher.abort();
        result
    });
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

fn failed(job: &JobFile, err: &PlanError, output: Output) -> ExitCode {
    let cancelled = err.is_cancelled();
    if let Some(stderr) = err.terraform_stderr().filter(|s| !s.trim().is_empty()) {
        eprintln!("terraform stderr:\n{}", stderr.trim_end());
    }
    let code = super::fail(err);
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
        code
    }
}

/// SIGINT and SIGTERM handlers, installed before the job starts so that no
/// early signal is lost.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }
}

/// Waits for a signal (forever when its handler could not be installed).
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken, signals: Signals) {
    #[cfg(unix)]
    {
        let Signals {
            mut interrupt,
            mut terminate,
        } = signals;
        tokio::select! {
            _ = recv(interrupt.as_mut()) => {}
            _ = recv(terminate.as_mut()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("cancelling: interrupting terraform and waiting for it to write its state…");
    token.cancel();
}
