//! `tendril deploy`: run a DEPLOY job from a job file.
//!
//! Progress goes to stderr (a phase list with a spinner on a terminal, plain
//! lines otherwise) and ends with a summary; `--output json` prints the report
//! (or `--output yaml`) on stdout. Exit code 0 only on success; 130 when cancelled (SIGINT/SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use tendril::job::{JobFile, JobType};
use tendril::pipeline::deploy::{self, DeployOptions};
use tendril::pipeline::phases::preflight::KubeconfigRef;
use tendril::pipeline::{JobEvent, RunMode};

use super::format::OutputFormat as Output;

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

/// Runs `tendril deploy`.
pub fn run(args: Args) -> ExitCode {
    let mode = if args.dry_run {
        RunMode::DryRun
    } else if args.no_cluster {
        RunMode::NoCluster
    } else {
        RunMode::Apply
    };
    let finish = |report: &tendril::pipeline::JobReport| {
        super::job::finish(report, args.output, args.report_file.as_ref())
    };
    let job = match super::job::load(&args.job, JobType::Deploy, mode) {
        Ok(job) => job,
        Err(report) => return finish(&report),
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
            Ok(k) => k.map(|path| KubeconfigRef {
                path,
                context: args.context.clone(),
            }),
            Err(e) => return super::fail(&e),
        },
        field_manager: args.field_manager.clone(),
        ..DeployOptions::default()
    };
    let progress = super::job::progress(deploy::PHASES);
    let sink = |e: JobEvent| super::job::show(&progress, &e);
    let report = super::job::block_on_cancellable(|cancel| async move {
        deploy::run_deploy(&job, &opts, &sink, &cancel).await
    });
    finish(&report)
}
