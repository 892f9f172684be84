//! `tendril destroy`: run a DESTROY job from a job file.
//!
//! Tears down what the cluster created outside terraform (Argo CD
//! Applications, LoadBalancer Services, Ingresses, PersistentVolumeClaims),
//! then runs `terraform destroy`. Progress goes to stderr and ends with a
//! summary; `--output json|yaml` prints the report on stdout. Exit code 0
//! only on success; 130 when cancelled (SIGINT/SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use tendril::job::JobType;
use tendril::pipeline::destroy::{self, DestroyOptions};
use tendril::pipeline::phases::preflight::KubeconfigRef;
use tendril::pipeline::{JobEvent, RunMode};

use super::format::OutputFormat;

/// Flags of `tendril destroy`.
#[derive(clap::Args)]
pub struct Args {
    /// The job file (YAML or JSON) of a DESTROY job.
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// Output format: `json` or `yaml` print the report on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Leave the cluster alone: no teardown, only `terraform destroy` (for a
    /// cluster that is gone, or whose objects were removed another way).
    #[arg(long)]
    pub no_cluster: bool,
    /// A kubeconfig to use instead of the job's `tendril.kubernetes` and of
    /// building access from the outputs.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The context in `--kubeconfig`.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Tear down Services, Ingresses and claims only in this namespace
    /// (repeatable; default: every namespace).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Where to write the report.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Put sensitive Terraform outputs into the report instead of `[redacted]`.
    #[arg(long)]
    pub include_sensitive_outputs: bool,
    /// Also write the job's result (status, failed phase, error) as JSON to
    /// this file, mode 0600 (the worker's contract).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,
}

/// Runs `tendril destroy`.
pub fn run(args: Args) -> ExitCode {
    let mode = if args.no_cluster {
        RunMode::NoCluster
    } else {
        RunMode::Apply
    };
    let finish = |report: &tendril::pipeline::JobReport| {
        super::job::finish(report, args.output, args.report_file.as_ref())
    };
    let job = match super::job::load(&args.job, JobType::Destroy, mode) {
        Ok(job) => job,
        Err(report) => return finish(&report),
    };
    let opts = DestroyOptions {
        // a runner configured to leave clusters alone destroys without teardown
        no_cluster: args.no_cluster || job.tendril.kubernetes.no_cluster,
        kubeconfig: args.kubeconfig.clone().map(|path| KubeconfigRef {
            path,
            context: args.context.clone(),
        }),
        output_dir: args.out_dir.clone(),
        include_sensitive_outputs: args.include_sensitive_outputs,
        teardown_namespaces: (!args.namespaces.is_empty()).then(|| args.namespaces.clone()),
    };
    let progress = super::job::progress(destroy::PHASES);
    let sink = |e: JobEvent| super::job::show(&progress, &e);
    let report = super::job::block_on_cancellable(|cancel| async move {
        destroy::run_destroy(&job, &opts, &sink, &cancel).await
    });
    finish(&report)
}
