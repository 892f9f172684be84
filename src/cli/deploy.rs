//! `tendril deploy`: run a DEPLOY job from a job file.
//!
//! Progress goes to stderr (a phase list with a spinner on a terminal, plain
//! lines otherwise) and ends with a summary; `--output json` prints the report
//! (or `--output yaml`) on stdout. Exit code 0 only on success; 130 when cancelled (SIGINT/SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tendril::apply::ApplyEvent;
use tendril::job::JobFile;
use tendril::pipeline::deploy::{
    self, DeployEvent, DeployMode, DeployOptions, DeployReport, JobStatus,
};
use tendril::pipeline::result::JobResult;
use tokio_util::sync::CancellationToken;

use super::plan::{EXIT_CANCELLED, Output};
use super::progress::{Progress, human};

/// Flags of `tendril deploy`.
#[derive(clap::Args)]
pub struct Args {
    /// The job file (YAML or JSON) of a DEPLOY job.
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Output format: `json` or `yaml` print the report on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Change nothing, anywhere: terraform only shows the plan (no apply; the
    /// plan stays usable); the report has the plan's change summary and the
    /// facts from its known outputs (unknown ones shown as `(known after
    /// apply)`); the manifests are rendered from them and, with a kubeconfig,
    /// sent with the server's dry run. Writes to `--out-dir` (default
    /// `./tendril-out`).
    #[arg(long, conflicts_with = "no_cluster")]
    pub dry_run: bool,
    /// Apply the terraform plan and write the manifests, kubeconfig and
    /// report to `--out-dir` (default `./tendril-out`), but leave any cluster
    /// alone (nothing is applied to it).
    #[arg(long)]
    pub no_cluster: bool,
    /// Where to write the rendered manifests, the kubeconfig and the report.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Put sensitive Terraform outputs into the report instead of `[redacted]`.
    #[arg(long)]
    pub include_sensitive_outputs: bool,
    /// A kubeconfig to use instead of the job's `tendril.kubernetes` and of
    /// building access from the outputs. When the job gives no cluster
    /// (cloud identity `local`, no `tendril.kubernetes`), `$KUBECONFIG` or
    /// `~/.kube/config` is used if it exists.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The context in `--kubeconfig`.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The server-side apply field manager.
    #[arg(long, default_value = tendril::apply::DEFAULT_FIELD_MANAGER)]
    pub field_manager: String,
    /// Also write the job's result (status, failed phase, error,
    /// execution_metadata) as JSON to this file, mode 0600 (the worker's contract).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,
}

fn detail(progress: &Progress, event: &DeployEvent) {
    match event {
        DeployEvent::Phase(p) => progress.phase(p),
        DeployEvent::Terraform(e) => progress.terraform(e),
        DeployEvent::Apply(e) => match e {
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
        DeployEvent::Note(n) => progress.line(&format!("      note: {n}")),
    }
}

fn summary(report: &DeployReport) {
    eprintln!();
    if report.job_id.is_empty() {
        // the job file could not be read: there is only the error
        if let Some(e) = &report.error {
            eprintln!("DEPLOY FAILED\nerror: {e}");
        }
        return;
    }
    match report.status {
        JobStatus::Success if report.dry_run => {
            eprintln!(
                "DEPLOY {} SUCCESS (dry run: nothing changed)",
                report.job_id
            )
        }
        JobStatus::Success => eprintln!("DEPLOY {} SUCCESS", report.job_id),
        JobStatus::Failed => eprintln!("DEPLOY {} FAILED", report.job_id),
        JobStatus::Cancelled => eprintln!("DEPLOY {} CANCELLED", report.job_id),
    }
    if let Some(c) = &report.cluster {
        eprintln!(
            "  cluster   {} ({})",
            c.name,
            c.endpoint.as_deref().unwrap_or("no endpoint")
        );
    }
    if let Some(a) = &report.argocd
        && !a.url.url.is_empty()
    {
        eprintln!("  argocd    {}", a.url.url);
        eprintln!(
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
        eprintln!(
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
        eprintln!("  warning   {w}");
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
}

/// The kubeconfig `--kubeconfig` names; else, only when the job itself gives
/// no way to the cluster, the one `$KUBECONFIG` or `~/.kube/config` names.
fn kubeconfig_of(
    args: &Args,
    job: &JobFile,
) -> Result<Option<PathBuf>, tendril::kubeconfig::KubeconfigError> {
    use tendril::kubeconfig::{KubeconfigError, KubeconfigSource};
    let job_gives_cluster = job.tendril.kubernetes.kubeconfig.is_some()
        || !matches!(job.cloud_identity, tendril::job::CloudIdentity::Local);
    if args.kubeconfig.is_none() && job_gives_cluster {
        return Ok(None);
    }
    let Ok(source) = KubeconfigSource::resolve(args.kubeconfig.as_deref()) else {
        return Ok(None);
    };
    match source.files() {
        [one] if matches!(source, KubeconfigSource::Flag(_)) || one.is_file() => {
            Ok(Some(one.clone()))
        }
        [_] => Ok(None),
        _ => Err(KubeconfigError::Kubeconfig {
            path: source.primary().to_path_buf(),
            reason: "$KUBECONFIG names several files and tendril deploy reads one; pass \
                     --kubeconfig FILE"
                .into(),
        }),
    }
}

/// Prints the summary and the report (`-o json|yaml`), writes the worker's
/// `--report-file`, and maps the report's status to an exit code.
fn finish(report: &DeployReport, args: &Args) -> ExitCode {
    summary(report);
    if let Some(path) = &args.report_file
        && let Err(e) = JobResult::of_deploy(report).write(path)
    {
        return super::fail(&e);
    }
    if let Err(e) = args.output.print(report) {
        return super::fail(&e);
    }
    match report.status {
        JobStatus::Success => ExitCode::SUCCESS,
        JobStatus::Failed => ExitCode::FAILURE,
        JobStatus::Cancelled => ExitCode::from(EXIT_CANCELLED),
    }
}

/// Runs `tendril deploy`.
pub fn run(args: Args) -> ExitCode {
    let mode = if args.dry_run {
        DeployMode::DryRun
    } else if args.no_cluster {
        DeployMode::NoCluster
    } else {
        DeployMode::Apply
    };
    let job = match JobFile::load(&args.job) {
        Ok(job) => job,
        Err(e) => return finish(&DeployReport::unreadable_job(&e, mode), &args),
    };
    // a runner configured to leave clusters alone deploys as --no-cluster
    let no_cluster = args.no_cluster || job.tendril.kubernetes.no_cluster;
    let out_dir = args
        .out_dir
        .clone()
        .or_else(|| (args.dry_run || args.no_cluster).then(|| PathBuf::from("tendril-out")));
    let opts = DeployOptions {
        dry_run: args.dry_run,
        no_cluster,
        output_dir: out_dir,
        include_sensitive_outputs: args.include_sensitive_outputs,
        kubeconfig: match kubeconfig_of(&args, &job) {
            Ok(k) => k.map(|k| (k, args.context.clone())),
            Err(e) => return super::fail(&e),
        },
        field_manager: args.field_manager.clone(),
        ..DeployOptions::default()
    };
    let progress = Progress::new(deploy::PHASES.len());
    let sink = |e: DeployEvent| detail(&progress, &e);
    let rt = super::runtime();
    let report = rt.block_on(async {
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(super::cancel_on_signal(
            cancel.clone(),
            super::Signals::install(),
        ));
        let report = deploy::run_deploy(&job, &opts, &sink, &cancel).await;
        watcher.abort();
        report
    });
    finish(&report, &args)
}
