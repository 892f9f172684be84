//! The DEPLOY job: preflight, credentials, the plan artifact, the config-hash
//! check (before any terraform command), terraform init, apply of the saved
//! plan (events forwarded live), outputs into infrastructure facts, the kube
//! client built natively, Argo CD, the App of Apps, the report. It always
//! returns a [`JobReport`]: on failure the report names the phase and the
//! error.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tendril::job::JobFile;
//! use tendril::pipeline::JobEvent;
//! use tendril::pipeline::deploy::{run_deploy, DeployOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! let job = JobFile::load(std::path::Path::new("fixtures/jobs/demo.yaml"))?;
//! let progress = |e: JobEvent| eprintln!("{e:?}");
//! let report = run_deploy(&job, &DeployOptions::default(), &progress, &CancellationToken::new()).await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::phases::cluster::{self, ClusterAccess, ClusterError};
use super::phases::credentials;
use super::phases::output;
use super::phases::planned::{self, PlannedOutputs};
use super::phases::preflight::{self, Checked, DeployInputs, KubeconfigRef, PreflightInput};
use super::phases::terraform::{self, InitInput, Initialized, Seed, TerraformPhaseError};
use super::report::{ArgoCdSummary, ChangeReport};
use super::{JobEvent, JobReport, JobRun, Phase, PhaseError, Progress, RunMode};
use crate::apply::ApplyEvent;
use crate::appofapps;
use crate::argocd::{self, AdminPassword, InstallOptions, Installed};
use crate::artifact::{Artifact, ArtifactError};
use crate::chart::manifests_to_yaml;
use crate::cloud::{ChildEnv, Session};
use crate::confighash::{ConfigHash, StalePlan};
use crate::facts::InfraFacts;
use crate::job::{JobFile, JobType, VineConfig};
use crate::outfile::{Mode, OutfileError};
use crate::terraform::Outputs;

/// The phases of a DEPLOY job, in order.
pub const PHASES: &[Phase] = &[
    Phase::Preflight,
    Phase::Credentials,
    Phase::Artifact,
    Phase::ConfigHash,
    Phase::TerraformInit,
    Phase::TerraformApply,
    Phase::Outputs,
    Phase::KubeClient,
    Phase::ArgoCd,
    Phase::AppOfApps,
    Phase::Report,
];

/// Largest plan file a DEPLOY job accepts.
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// How to run a DEPLOY job.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Change nothing anywhere: terraform only shows the plan (no apply);
    /// facts come from the plan's known output values; the manifests are
    /// rendered from them and, with a kubeconfig, sent with the server's dry
    /// run. Wins over `no_cluster`.
    pub dry_run: bool,
    /// Apply the plan and render (and write) the manifests, but leave any
    /// cluster alone: no kube client, nothing applied.
    pub no_cluster: bool,
    /// Where to write the rendered manifests, the kubeconfig and the report.
    pub output_dir: Option<PathBuf>,
    /// Put sensitive Terraform outputs into the report instead of `[redacted]`.
    pub include_sensitive_outputs: bool,
    /// A kubeconfig (and context) to use instead of the job's
    /// `tendril.kubernetes` and instead of building access from the outputs.
    pub kubeconfig: Option<KubeconfigRef>,
    /// The server-side apply field manager.
    pub field_manager: String,
    /// How long to wait for the Argo CD load balancer's address.
    pub lb_wait: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            dry_run: false,
            no_cluster: false,
            output_dir: None,
            include_sensitive_outputs: false,
            kubeconfig: None,
            field_manager: crate::apply::DEFAULT_FIELD_MANAGER.to_string(),
            lb_wait: Duration::from_secs(120),
        }
    }
}

impl DeployOptions {
    /// How this run treats terraform and the cluster.
    pub fn mode(&self) -> RunMode {
        if self.dry_run {
            RunMode::DryRun
        } else if self.no_cluster {
            RunMode::NoCluster
        } else {
            RunMode::Apply
        }
    }
}

/// Errors of the phases only a DEPLOY runs.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The plan artifact could not be fetched or failed verification.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The configuration changed since the plan was made (the contract's
    /// message, whole).
    #[error(transparent)]
    StalePlan(#[from] StalePlan),
    /// A terraform command of a dry run (show) failed.
    #[error(transparent)]
    Terraform(#[from] TerraformPhaseError),
    /// Facts could not be read, or the cluster could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Argo CD failed.
    #[error(transparent)]
    ArgoCd(#[from] argocd::ArgoCdError),
    /// The App of Apps failed to render.
    #[error(transparent)]
    AppOfApps(#[from] appofapps::AppOfAppsError),
    /// Applying the App of Apps failed. Not transparent: the apply error
    /// must be a cause in the chain, so the report finds its per-object
    /// diagnostics ([`super::report::ObjectDiagnostic::of_error`]).
    #[error("{0}")]
    Apply(#[from] crate::apply::ApplyError),
    /// An output file could not be written.
    #[error(transparent)]
    Output(#[from] OutfileError),
    /// The kubeconfig for people could not be written.
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeconfig::KubeconfigError),
}

/// Runs a DEPLOY job. Never panics on bad input; the report says what failed.
#[tracing::instrument(name = "job", skip_all, fields(id = %job.job.id, job_type = "DEPLOY"))]
pub async fn run_deploy(
    job: &JobFile,
    opts: &DeployOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> JobReport {
    let mut run = JobRun::start(
        &job.job.id.0,
        JobType::Deploy,
        opts.mode(),
        progress,
        cancel,
    );
    run.report().plan_job_id = job.job.plan_job_id.as_ref().map(|p| p.0.clone());
    let result = deploy_phases(&mut run, job, opts).await;
    run.finish(result, opts.output_dir.as_deref())
}

async fn deploy_phases(
    run: &mut JobRun<'_>,
    job: &JobFile,
    opts: &DeployOptions,
) -> Result<(), PhaseError> {
    let (progress, cancel, mode) = (run.progress(), run.cancel(), opts.mode());

    let input = PreflightInput {
        job,
        mode,
        kubeconfig: opts.kubeconfig.as_ref(),
        output_dir: opts.output_dir.as_deref(),
    };
    let (checked, inputs) = run
        .run(Phase::Preflight, async { preflight::check_deploy(&input) })
        .await?;
    checked.warnings.iter().for_each(|w| run.warn(w.clone()));

    let creds = run
        .run(Phase::Credentials, credentials::assume(job, &checked.vine))
        .await?;

    let artifact = run
        .run(Phase::Artifact, fetch_artifact(job, &creds.child_env))
        .await?;

    let hash = run
        .run(Phase::ConfigHash, async {
            check_config_hash(&artifact, checked.config_hash)
        })
        .await?;
    run.report().config_hash = Some(hash.to_string());

    let tf = run
        .run(
            Phase::TerraformInit,
            terraform::init(
                InitInput {
                    job,
                    vine: &checked.vine,
                    env: &creds.child_env,
                    seed: Seed::SavedPlan(&artifact),
                },
                progress,
                cancel,
            ),
        )
        .await?;
    run.report().terraform_version = Some(tf.terraform.version().to_string());

    if mode == RunMode::DryRun {
        run.skip(Phase::TerraformApply);
        run.report().change_summary = Some(planned_changes(&artifact));
        run.note(
            "dry run: terraform apply skipped; the plan is unchanged and can still be applied",
        );
    } else {
        let applied = run
            .run(
                Phase::TerraformApply,
                terraform::apply(&tf, progress, cancel),
            )
            .await?;
        run.report().change_summary = Some(ChangeReport {
            add: applied.changes.add,
            change: applied.changes.change,
            remove: applied.changes.remove,
            applied: true,
            planned: Some(artifact.manifest.change_summary.clone()),
        });
        let warnings = terraform::warnings_of(&applied.warnings);
        run.report().warnings.extend(warnings);
    }

    let read = run
        .run(
            Phase::Outputs,
            read_outputs(job, &checked.vine, &tf, mode, cancel),
        )
        .await?;
    drop(tf);
    if !read.unknown.is_empty() {
        run.warn(format!(
            "dry run: outputs known only after apply, shown as `{}`: {}",
            planned::UNKNOWN,
            read.unknown.join(", ")
        ));
    }
    run.report()
        .set_outputs(&read.outputs, opts.include_sensitive_outputs);
    let Some(facts) = read.facts else {
        // a dry run whose plan leaves the cluster unknown: Argo CD is
        // rendered, the App of Apps needs the facts
        run.warn("dry run: the plan leaves required outputs unknown, so the App of Apps (which needs the facts) is not rendered; Argo CD is");
        run.skip(Phase::KubeClient);
        run.skip(Phase::ArgoCd);
        run.skip(Phase::AppOfApps);
        return run
            .run(Phase::Report, async {
                write_argocd_yaml(opts, &inputs)?;
                finish(opts, progress)
            })
            .await;
    };
    let redact = (!opts.include_sensitive_outputs).then_some(&read.outputs);
    run.report().set_facts(&facts, redact);

    let client = run
        .run(
            Phase::KubeClient,
            kube_client(
                KubeClientInput {
                    opts,
                    checked: &checked,
                    session: creds.session.as_ref(),
                    facts: &facts,
                },
                progress,
            ),
        )
        .await?;

    let installed = run
        .run(
            Phase::ArgoCd,
            install_argocd(opts, &inputs, client.as_ref(), progress),
        )
        .await?;
    report_argocd(run, &inputs, installed.as_ref());

    run.run(
        Phase::AppOfApps,
        apply_app_of_apps(
            AppsInput {
                job,
                opts,
                inputs: &inputs,
                facts: &facts,
                client: client.as_ref(),
            },
            progress,
        ),
    )
    .await?;

    run.run(Phase::Report, async { finish(opts, progress) })
        .await
}

/// The artifact phase: downloads the artifact of `plan_job_id` and verifies
/// its digest. No terraform command runs here.
async fn fetch_artifact(job: &JobFile, env: &ChildEnv) -> Result<Artifact, DeployError> {
    let plan_job = job
        .job
        .plan_job_id
        .as_ref()
        .map(|p| p.0.as_str())
        .unwrap_or_default();
    let store = super::phases::artifact_store(job, env)?;
    Ok(store.download(plan_job, MAX_PLAN_BYTES).await?)
}

/// The config_hash phase: refuses a plan made from another configuration
/// ([`StalePlan`], the contract's message).
fn check_config_hash(artifact: &Artifact, current: ConfigHash) -> Result<ConfigHash, StalePlan> {
    artifact.check_config(&current)?;
    Ok(current)
}

/// What the saved plan will change (a dry run applies nothing).
fn planned_changes(artifact: &Artifact) -> ChangeReport {
    let s = &artifact.manifest.change_summary;
    ChangeReport {
        add: s.add,
        change: s.change,
        remove: s.remove,
        applied: false,
        planned: Some(s.clone()),
    }
}

/// The outputs phase's result: the outputs, the facts (absent in a dry run
/// whose plan leaves required outputs unknown), and the unknown outputs.
struct ReadOutputs {
    outputs: Outputs,
    facts: Option<InfraFacts>,
    unknown: Vec<String>,
}

/// The outputs phase: `terraform output` into facts; a dry run reads the
/// plan's known output values instead.
async fn read_outputs(
    job: &JobFile,
    vine: &VineConfig,
    tf: &Initialized,
    mode: RunMode,
    cancel: &CancellationToken,
) -> Result<ReadOutputs, DeployError> {
    if mode == RunMode::DryRun {
        let show = tf
            .terraform
            .show_plan_json(&tf.workspace.plan_file(), cancel)
            .await
            .map_err(TerraformPhaseError::from)?;
        return Ok(planned_facts(job, vine, &show));
    }
    let outputs = terraform::outputs(tf, cancel).await?;
    let facts = cluster::facts_from(job, vine, &outputs)?;
    Ok(ReadOutputs {
        outputs,
        facts: Some(facts),
        unknown: Vec::new(),
    })
}

/// The outputs and facts a dry run can know: the plan's known output values,
/// the unknown ones shown as [`planned::UNKNOWN`].
fn planned_facts(job: &JobFile, vine: &VineConfig, show: &Value) -> ReadOutputs {
    let planned = PlannedOutputs::from_show_json(show);
    let unknown: Vec<String> = planned
        .unknown_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let marked = planned.with_markers();
    // with markers first (the manifests show what is unknown); a marker can
    // be refused where a URL or certificate is needed, then without them
    let facts = cluster::facts_from(job, vine, &marked)
        .ok()
        .or_else(|| cluster::facts_from(job, vine, &planned.known()).ok());
    ReadOutputs {
        outputs: marked,
        facts,
        unknown,
    }
}

/// What the kube_client phase needs.
struct KubeClientInput<'a> {
    opts: &'a DeployOptions,
    checked: &'a Checked,
    session: Option<&'a Session>,
    facts: &'a InfraFacts,
}

/// The kube_client phase: writes a kubeconfig for people (not in a dry run:
/// the cluster may not exist yet) and builds the client; none with
/// `--no-cluster`, nor in a dry run that cannot reach a cluster.
async fn kube_client(
    input: KubeClientInput<'_>,
    progress: Progress<'_>,
) -> Result<Option<kube::Client>, DeployError> {
    let mode = input.opts.mode();
    let note = |text: String| progress(JobEvent::Note(text));
    if mode != RunMode::DryRun
        && let Some(dir) = &input.opts.output_dir
    {
        cluster::write_kubeconfig_for_people(dir, input.facts)?;
    }
    if mode == RunMode::NoCluster {
        note("--no-cluster: the cluster is left alone; the manifests are only rendered".into());
        return Ok(None);
    }
    let access = ClusterAccess {
        kubeconfig: input.checked.kubeconfig.as_ref(),
        session: input.session,
        facts: input.facts,
    };
    match cluster::client_for(access).await {
        Ok(client) => Ok(Some(client)),
        Err(ClusterError::NoCredentials) if mode == RunMode::DryRun => {
            note("dry run without cluster credentials (cloud identity `local` and no kubeconfig): rendered only, no server dry run".into());
            Ok(None)
        }
        Err(e) if mode == RunMode::DryRun => {
            note(format!(
                "dry run: the cluster is not reachable ({e}); rendered only, no server dry run"
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The argocd phase: writes `argocd.yaml`, then (with a cluster) installs
/// Argo CD and reads its admin password and URL.
async fn install_argocd(
    opts: &DeployOptions,
    inputs: &DeployInputs,
    client: Option<&kube::Client>,
    progress: Progress<'_>,
) -> Result<Option<Installed>, DeployError> {
    write_argocd_yaml(opts, inputs)?;
    let Some(client) = client else {
        progress(JobEvent::Note(format!(
            "no cluster: rendered {} Argo CD objects, applied nothing",
            inputs.argocd_render.manifests().len()
        )));
        return Ok(None);
    };
    let sink = |e: ApplyEvent| progress(JobEvent::Apply(e));
    let how = InstallOptions {
        dry_run: opts.mode() == RunMode::DryRun,
        field_manager: opts.field_manager.clone(),
        lb_wait: opts.lb_wait,
        now: jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    };
    Ok(Some(
        argocd::install(client, &inputs.argocd, &inputs.argocd_render, &how, &sink).await?,
    ))
}

/// Puts Argo CD into the report, with a warning when the admin password
/// cannot be known or the URL has a note.
fn report_argocd(run: &mut JobRun<'_>, inputs: &DeployInputs, installed: Option<&Installed>) {
    let namespace = inputs.argocd.namespace.clone();
    let Some(installed) = installed else {
        run.report().argocd = Some(ArgoCdSummary {
            url: String::new(),
            note: Some("no cluster: nothing was installed".into()),
            admin_password: None,
            namespace,
            objects: BTreeMap::new(),
        });
        return;
    };
    run.report().argocd = Some(ArgoCdSummary {
        url: installed.url.url.clone(),
        note: installed.url.note.clone(),
        admin_password: match &installed.admin_password {
            AdminPassword::Known(p) => Some(p.clone()),
            _ => None,
        },
        namespace: namespace.clone(),
        objects: installed.report.action_counts(),
    });
    if matches!(installed.admin_password, AdminPassword::NotRetrievable) {
        run.report().warnings.push(format!(
            "the Argo CD admin password is not retrievable: Secret {} no longer exists in namespace {namespace} (it was rotated and deleted); preset tendril.argocd.admin_password to know it",
            argocd::INITIAL_ADMIN_SECRET,
        ));
    }
    if let Some(note) = &installed.url.note {
        run.report().warnings.push(format!("Argo CD URL: {note}"));
    }
}

/// What the app_of_apps phase needs.
struct AppsInput<'a> {
    job: &'a JobFile,
    opts: &'a DeployOptions,
    inputs: &'a DeployInputs,
    facts: &'a InfraFacts,
    client: Option<&'a kube::Client>,
}

/// The app_of_apps phase: renders the App of Apps from the facts, writes
/// `app-of-apps.yaml`, and (with a cluster) applies it with its inventory.
async fn apply_app_of_apps(
    input: AppsInput<'_>,
    progress: Progress<'_>,
) -> Result<(), DeployError> {
    let aoa = &input.inputs.apps;
    let mut manifests = appofapps::render(input.facts, aoa)?;
    if !input.inputs.root_application {
        manifests = preflight::without_root(manifests);
    }
    if let Some(dir) = &input.opts.output_dir {
        // may hold the apps repository's password
        let yaml = manifests_to_yaml(&manifests);
        output::write(dir, "app-of-apps.yaml", yaml.as_bytes(), Mode::Secret)?;
    }
    let Some(client) = input.client else {
        return Ok(());
    };
    let dry_run = input.opts.mode() == RunMode::DryRun;
    let how = appofapps::ApplyApps {
        dry_run,
        field_manager: input.opts.field_manager.clone(),
        // without the root Application there is nothing to wait for
        wait: input.job.tendril.apps.wait && input.inputs.root_application && !dry_run,
        timeout: input.job.tendril.argocd.timeout,
    };
    // A server dry run of Argo CD stores no CRDs, so on a cluster without
    // Argo CD the server cannot dry-run the Applications: those are only
    // rendered then.
    if dry_run && !appofapps::serves_applications(client, &aoa.namespace).await {
        let before = manifests.len();
        manifests.retain(|m| !appofapps::is_argo_object(&m.object));
        progress(JobEvent::Note(format!(
            "dry run: the cluster does not serve Argo CD's kinds yet (its CRDs were only dry-run applied); {} Argo CD objects of the App of Apps were rendered, not sent",
            before - manifests.len()
        )));
    }
    if !manifests.is_empty() {
        let sink = |e: ApplyEvent| progress(JobEvent::Apply(e));
        appofapps::apply(client, &aoa.namespace, manifests, &how, &sink).await?;
    }
    Ok(())
}

/// The report phase: says where the outputs went (the report itself is
/// written when the job ends, with every timing).
fn finish(opts: &DeployOptions, progress: Progress<'_>) -> Result<(), DeployError> {
    if let Some(dir) = &opts.output_dir {
        progress(JobEvent::Note(format!(
            "report and manifests in {}",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes the preflight's Argo CD render (Redis password `[redacted]`) as
/// `argocd.yaml` when there is an output directory.
fn write_argocd_yaml(opts: &DeployOptions, inputs: &DeployInputs) -> Result<(), DeployError> {
    if let Some(dir) = &opts.output_dir {
        let yaml = inputs.argocd_render.to_yaml();
        output::write(dir, "argocd.yaml", yaml.as_bytes(), Mode::Secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Action, ApplyError, ApplyReport, ObjectRef, ObjectResult, Status};
    use crate::pipeline::report::ObjectDiagnostic;

    fn timed_out() -> ApplyError {
        let object = ObjectRef {
            group: "argoproj.io".into(),
            version: "v1alpha1".into(),
            kind: "Application".into(),
            namespace: Some("argocd".into()),
            name: "root".into(),
        };
        ApplyError::Timeout {
            timeout: Duration::from_secs(1),
            report: Box::new(ApplyReport {
                objects: vec![ObjectResult {
                    object,
                    source: "templates/root.yaml".into(),
                    wave: 0,
                    action: Action::Created,
                    error: None,
                    conflicts: Vec::new(),
                    status: Status::NotReady("OutOfSync".into()),
                    diagnostics: Vec::new(),
                    note: None,
                }],
                ..ApplyReport::default()
            }),
        }
    }

    #[test]
    fn diagnostics_are_found_behind_either_apply_phase_error() {
        for (phase, err) in [
            (Phase::AppOfApps, DeployError::Apply(timed_out())),
            (
                Phase::ArgoCd,
                DeployError::ArgoCd(argocd::ArgoCdError::Apply(timed_out())),
            ),
        ] {
            let e = PhaseError {
                phase,
                source: Box::new(err),
            };
            let found = ObjectDiagnostic::of_error(&e);
            assert_eq!(found.len(), 1, "{phase}");
            assert_eq!(found[0].state, "not_ready");
            assert_eq!(found[0].reason, "OutOfSync");
        }
    }
}
