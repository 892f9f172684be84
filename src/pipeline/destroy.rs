//! The DESTROY job: preflight, credentials, terraform init, outputs, the kube
//! client (when the cluster is still reachable), the teardown of what the
//! cluster created outside terraform, `terraform destroy`, the report.
//!
//! The teardown ([`crate::teardown`]) deletes the Argo CD Applications (with
//! cascading deletion), then Services of type LoadBalancer, Ingresses and
//! PersistentVolumeClaims, and waits, bounded, until they and their volumes
//! are gone: their cloud resources (load balancers, disks, DNS records)
//! would otherwise block `terraform destroy` or outlive it. When something
//! remains, the job stops before `terraform destroy` (unless
//! `tendril.teardown.continue_on_remaining`); a re-run continues from what is
//! left. A cluster that cannot be reached (already gone) is skipped with a
//! warning. The state stays in its backend, empty, for audit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tendril::job::JobFile;
//! use tendril::pipeline::JobEvent;
//! use tendril::pipeline::destroy::{run_destroy, DestroyOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! let job = JobFile::load(std::path::Path::new("fixtures/jobs/demo-destroy.yaml"))?;
//! let progress = |e: JobEvent| eprintln!("{e:?}");
//! let report = run_destroy(&job, &DestroyOptions::default(), &progress, &CancellationToken::new()).await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::phases::cluster::{self, ClusterAccess};
use super::phases::credentials;
use super::phases::preflight::{self, Checked, KubeconfigRef, PreflightInput};
use super::phases::terraform::{self, InitInput, Initialized, Seed, TerraformPhaseError};
use super::report::ChangeReport;
use super::{JobEvent, JobReport, JobRun, Phase, PhaseError, Progress, RunMode};
use crate::cloud::Session;
use crate::facts::InfraFacts;
use crate::job::{JobFile, JobType, VineConfig};
use crate::teardown::{self, TeardownEvent, TeardownOptions, TeardownReport};
use crate::terraform::Outputs;

/// The phases of a DESTROY job, in order.
pub const PHASES: &[Phase] = &[
    Phase::Preflight,
    Phase::Credentials,
    Phase::TerraformInit,
    Phase::Outputs,
    Phase::KubeClient,
    Phase::Teardown,
    Phase::TerraformDestroy,
    Phase::Report,
];

/// How to run a DESTROY job.
#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    /// Leave the cluster alone: no teardown, only `terraform destroy`.
    pub no_cluster: bool,
    /// A kubeconfig (and context) to use instead of the job's
    /// `tendril.kubernetes` and instead of building access from the outputs.
    pub kubeconfig: Option<KubeconfigRef>,
    /// Where to write the report.
    pub output_dir: Option<PathBuf>,
    /// Put sensitive Terraform outputs into the report instead of `[redacted]`.
    pub include_sensitive_outputs: bool,
    /// The namespaces the teardown deletes Services, Ingresses and claims in
    /// (default: every namespace; the whole cluster is going away).
    pub teardown_namespaces: Option<Vec<String>>,
}

impl DestroyOptions {
    /// How this run treats the cluster.
    pub fn mode(&self) -> RunMode {
        if self.no_cluster {
            RunMode::NoCluster
        } else {
            RunMode::Apply
        }
    }
}

/// Errors of the phases only a DESTROY runs.
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    /// The teardown failed (an API error, not an object that remains).
    #[error(transparent)]
    Teardown(#[from] teardown::TeardownError),
    /// Objects remain after the bounded wait; `terraform destroy` did not run.
    #[error(
        "{count} object(s) the cluster created remain after the teardown, so terraform destroy did not run (their cloud resources would block it or outlive it):\n{}finish them by hand (see docs/destroy.md) and run the DESTROY job again; it continues from what is left, or set tendril.teardown.continue_on_remaining to destroy anyway",
        report.summary()
    )]
    Remaining {
        /// How many remain.
        count: usize,
        /// What the teardown did and what remains, with why.
        report: Box<TeardownReport>,
    },
}

/// Runs a DESTROY job. Never panics on bad input; the report says what failed.
#[tracing::instrument(name = "job", skip_all, fields(id = %job.job.id, job_type = "DESTROY"))]
pub async fn run_destroy(
    job: &JobFile,
    opts: &DestroyOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> JobReport {
    let mut run = JobRun::start(
        &job.job.id.0,
        JobType::Destroy,
        opts.mode(),
        progress,
        cancel,
    );
    let result = destroy_phases(&mut run, job, opts).await;
    run.finish(result, opts.output_dir.as_deref())
}

async fn destroy_phases(
    run: &mut JobRun<'_>,
    job: &JobFile,
    opts: &DestroyOptions,
) -> Result<(), PhaseError> {
    let (progress, cancel) = (run.progress(), run.cancel());

    let input = PreflightInput {
        job,
        mode: opts.mode(),
        kubeconfig: opts.kubeconfig.as_ref(),
        output_dir: opts.output_dir.as_deref(),
    };
    let checked = run
        .run(Phase::Preflight, async { preflight::check_destroy(&input) })
        .await?;
    run.report().config_hash = Some(checked.config_hash.to_string());

    let creds = run
        .run(Phase::Credentials, credentials::assume(job, &checked.vine))
        .await?;

    let tf = run
        .run(
            Phase::TerraformInit,
            terraform::init(
                InitInput {
                    job,
                    vine: &checked.vine,
                    env: &creds.child_env,
                    seed: Seed::Variables,
                },
                progress,
                cancel,
            ),
        )
        .await?;
    run.report().terraform_version = Some(tf.terraform.version().to_string());

    let (outputs, facts) = run
        .run(
            Phase::Outputs,
            read_outputs(job, &checked.vine, &tf, cancel),
        )
        .await?;
    run.report()
        .set_outputs(&outputs, opts.include_sensitive_outputs);

    let client = match facts {
        _ if opts.no_cluster => {
            run.skip(Phase::KubeClient);
            run.note("--no-cluster: the cluster is left alone; no teardown");
            None
        }
        Err(why) => {
            run.skip(Phase::KubeClient);
            run.warn(format!(
                "no cluster in the terraform outputs ({why}): the teardown is skipped"
            ));
            None
        }
        Ok(facts) => {
            let redact = (!opts.include_sensitive_outputs).then_some(&outputs);
            run.report().set_facts(&facts, redact);
            let reached = run
                .run(
                    Phase::KubeClient,
                    reachable_client(&checked, creds.session.as_ref(), &facts),
                )
                .await?;
            match reached {
                Reach::Client(client) => Some(client),
                Reach::Unreachable(why) => {
                    run.warn(format!(
                        "the cluster is not reachable ({why}); it may be gone already: the teardown is skipped"
                    ));
                    None
                }
            }
        }
    };

    match &client {
        Some(client) => {
            let how = teardown_options(job, opts);
            let keep_going = job.tendril.teardown.continue_on_remaining;
            let torn = run
                .run(
                    Phase::Teardown,
                    tear_down(client, &how, keep_going, progress),
                )
                .await;
            let torn = match torn {
                Ok(torn) => torn,
                Err(e) => {
                    if let Some(DestroyError::Remaining { report, .. }) =
                        e.source.downcast_ref::<DestroyError>()
                    {
                        run.report().teardown = Some(report.as_ref().clone());
                    }
                    return Err(e);
                }
            };
            for kept in torn.retained() {
                run.report().warnings.push(format!(
                    "{} is kept by its reclaim policy (Retain): its disk outlives the destroy; delete it in the cloud when it is no longer needed",
                    kept.object
                ));
            }
            if !torn.is_clean() {
                run.warn(format!(
                    "tendril.teardown.continue_on_remaining: destroying although {} object(s) remain:\n{}",
                    torn.remaining().count(),
                    torn.summary()
                ));
            }
            run.report().teardown = Some(torn);
        }
        None => run.skip(Phase::Teardown),
    }

    let destroyed = run
        .run(
            Phase::TerraformDestroy,
            terraform::destroy(&tf, progress, cancel),
        )
        .await?;
    run.report().change_summary = Some(ChangeReport {
        add: destroyed.changes.add,
        change: destroyed.changes.change,
        remove: destroyed.changes.remove,
        applied: true,
        planned: None,
    });
    let warnings = terraform::warnings_of(&destroyed.warnings);
    run.report().warnings.extend(warnings);
    drop(tf);

    run.run(Phase::Report, async {
        if let Some(dir) = &opts.output_dir {
            progress(JobEvent::Note(format!("report in {}", dir.display())));
        }
        Ok::<_, DestroyError>(())
    })
    .await
}

/// The outputs phase: `terraform output`, and the facts when the state still
/// has a cluster (else the error, for the warning that says why not).
async fn read_outputs(
    job: &JobFile,
    vine: &VineConfig,
    tf: &Initialized,
    cancel: &CancellationToken,
) -> Result<(Outputs, Result<InfraFacts, cluster::ClusterError>), TerraformPhaseError> {
    let outputs = terraform::outputs(tf, cancel).await?;
    let facts = cluster::facts_from(job, vine, &outputs);
    Ok((outputs, facts))
}

/// Whether the cluster answered.
enum Reach {
    /// It did: a verified client.
    Client(kube::Client),
    /// It did not (it may be gone already), and why.
    Unreachable(String),
}

/// The kube_client phase of a DESTROY: a client when the cluster answers,
/// else why not (not an error: a cluster already gone has nothing to tear down).
async fn reachable_client(
    checked: &Checked,
    session: Option<&Session>,
    facts: &InfraFacts,
) -> Result<Reach, std::convert::Infallible> {
    let access = ClusterAccess {
        kubeconfig: checked.kubeconfig.as_ref(),
        session,
        facts,
    };
    let client = match cluster::client_for(access).await {
        Ok(client) => client,
        Err(e) => {
            return Ok(Reach::Unreachable(crate::errors::chain_inline(&e)));
        }
    };
    // a kubeconfig's client has not talked to the server yet
    Ok(match client.apiserver_version().await {
        Ok(_) => Reach::Client(client),
        Err(e) => Reach::Unreachable(crate::errors::chain_inline(&e)),
    })
}

/// How the teardown runs: the job's Argo CD namespace and timeout, every
/// namespace unless the options name some.
fn teardown_options(job: &JobFile, opts: &DestroyOptions) -> TeardownOptions {
    let mut how = TeardownOptions::new(job.tendril.argocd.namespace.clone());
    how.timeout = job.tendril.teardown.timeout;
    if let Some(list) = &opts.teardown_namespaces {
        how.scope = teardown::Scope::Namespaces(list.clone());
    }
    how
}

/// The teardown phase: fails when objects remain after the wait, unless
/// `keep_going`.
async fn tear_down(
    client: &kube::Client,
    how: &TeardownOptions,
    keep_going: bool,
    progress: Progress<'_>,
) -> Result<TeardownReport, DestroyError> {
    let sink = |e: TeardownEvent| progress(JobEvent::Teardown(e));
    let torn = teardown::teardown(client, how, &sink).await?;
    let count = torn.remaining().count();
    if count > 0 && !keep_going {
        return Err(DestroyError::Remaining {
            count,
            report: Box::new(torn),
        });
    }
    Ok(torn)
}
