//! The DEPLOY job, phase by phase.
//!
//! [`run_deploy`] runs, in order: assume cloud credentials; download the plan
//! artifact; check the config hash (before any terraform command); terraform
//! init; terraform apply of the saved plan (events forwarded live); read the
//! outputs into infrastructure facts; build the kube client natively; install
//! Argo CD; apply the App of Apps; write the report. It always returns a
//! [`DeployReport`]: on failure the report names the phase and the error.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tendril::job::JobFile;
//! use tendril::pipeline::deploy::{run_deploy, DeployOptions, DeployEvent};
//! use tokio_util::sync::CancellationToken;
//!
//! let job = JobFile::load(std::path::Path::new("fixtures/jobs/demo.yaml"))?;
//! let progress = |e: DeployEvent| eprintln!("{e:?}");
//! let report = run_deploy(&job, &DeployOptions::default(), &progress, &CancellationToken::new()).await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::credentials::{self, JobCredentials};
use super::plan::{self as tf_steps, PlanError, Workspace};
use super::planned::{self, PlannedOutputs};
pub use super::preflight::DeployMode;
use super::preflight::{self, Checked, KubeconfigRef, PreflightInput};
use super::{Phase, PhaseError, PhaseEvent, PhaseTiming, Phases};
use crate::Secret;
use crate::apply::ApplyEvent;
use crate::appofapps;
use crate::argocd::{self, AdminPassword, ArgoCdUrl, InstallOptions};
use crate::artifact::Artifact;
use crate::chart::manifests_to_yaml;
use crate::confighash::ConfigHash;
use crate::facts::{CloudProvider, InfraFacts, OutputMapping};
use crate::job::{JobError, JobFile};
use crate::kubeconfig::{self, KubeconfigError, UserAuth};
use crate::outfile::Mode;
use crate::terraform::{self, Event as TerraformEvent, Outputs};

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
    pub kubeconfig: Option<(PathBuf, Option<String>)>,
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
    pub fn mode(&self) -> DeployMode {
        if self.dry_run {
            DeployMode::DryRun
        } else if self.no_cluster {
            DeployMode::NoCluster
        } else {
            DeployMode::Apply
        }
    }
}

/// Progress of a DEPLOY job.
#[derive(Debug, Clone)]
pub enum DeployEvent {
    /// A phase started or ended.
    Phase(PhaseEvent),
    /// An event of terraform's JSON stream.
    Terraform(TerraformEvent),
    /// An apply-engine event (Argo CD or App of Apps).
    Apply(ApplyEvent),
    /// A note worth showing (a warning, a skipped step).
    Note(String),
}

/// How the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Every phase finished.
    Success,
    /// A phase failed.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

/// The cluster, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    /// Name.
    pub name: String,
    /// API server endpoint.
    pub endpoint: Option<String>,
    /// ARN (AWS) or resource ID.
    pub arn: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Provider.
    pub provider: String,
}

/// Argo CD, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ArgoCdSummary {
    /// URL (with a note when only reachable in-cluster).
    #[serde(flatten)]
    pub url: ArgoCdUrl,
    /// The admin password; `null` when not retrievable or not read.
    pub admin_password: Option<Secret<String>>,
    /// Namespace.
    pub namespace: String,
    /// Objects created/configured/unchanged.
    pub objects: BTreeMap<&'static str, usize>,
}

/// One object that failed or did not become ready, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectDiagnostic {
    /// `Kind namespace/name`.
    pub object: String,
    /// The manifest it came from.
    pub source: String,
    /// `failed` or `not_ready`.
    pub state: &'static str,
    /// Why.
    pub reason: String,
    /// What the cluster said (conditions, events, pod states).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ObjectDiagnostic {
    fn from_report(report: &crate::apply::ApplyReport) -> Vec<ObjectDiagnostic> {
        use crate::apply::{Action, Status};
        report
            .objects
            .iter()
            .filter_map(|o| {
                let (state, reason) = match (&o.status, o.action, &o.error) {
                    (Status::Failed(r), _, _) => ("failed", r.clone()),
                    (_, Action::Failed, e) => (
                        "failed",
                        e.as_ref().map(ToString::to_string).unwrap_or_default(),
                    ),
                    (Status::NotReady(r), _, _) => ("not_ready", r.clone()),
                    _ => return None,
                };
                Some(ObjectDiagnostic {
                    object: o.object.to_string(),
                    source: o.source.clone(),
                    state,
                    reason,
                    details: o.diagnostics.clone(),
                })
            })
            .collect()
    }
}

/// The report of a DEPLOY job (JSON with `--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// SUCCESS, FAILED or CANCELLED.
    pub status: JobStatus,
    /// The DEPLOY job.
    pub job_id: String,
    /// The PLAN job whose plan was applied.
    pub plan_job_id: Option<String>,
    /// Whether this was a dry run (nothing changed anywhere).
    pub dry_run: bool,
    /// `apply`, `dry_run` or `no_cluster`.
    pub mode: DeployMode,
    /// The phase that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<Phase>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The config hash of the job's snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The cluster.
    pub cluster: Option<ClusterSummary>,
    /// Argo CD.
    pub argocd: Option<ArgoCdSummary>,
    /// Terraform outputs (sensitive ones `[redacted]` unless asked).
    pub outputs: Value,
    /// What terraform changed.
    pub change_summary: Option<Value>,
    /// Infrastructure facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Value>,
    /// Phase timings in milliseconds, in order.
    pub timings: Vec<PhaseTiming>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// When applying or waiting failed: every object that failed or was not
    /// ready, with its reason and what the cluster said about it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<ObjectDiagnostic>,
    /// The object the Trellis worker API stores (see `docs/report.md`).
    pub execution_metadata: Value,
}

impl DeployReport {
    fn new(job: &JobFile, mode: DeployMode) -> Self {
        DeployReport {
            job_id: job.job.id.0.clone(),
            plan_job_id: job.job.plan_job_id.as_ref().map(|p| p.0.clone()),
            ..DeployReport::empty(mode)
        }
    }

    /// The report of a job whose file could not be read or parsed: FAILED in
    /// `preflight`, with the error; `job_id` is empty (the file gave none).
    pub fn unreadable_job(error: &JobError, mode: DeployMode) -> DeployReport {
        DeployReport {
            failed_phase: Some(Phase::Preflight),
            error: Some(crate::errors::chain_lines(error)),
            ..DeployReport::empty(mode)
        }
    }

    /// A FAILED report of no job, that nothing has been added to yet.
    fn empty(mode: DeployMode) -> DeployReport {
        DeployReport {
            status: JobStatus::Failed,
            job_id: String::new(),
            plan_job_id: None,
            dry_run: mode == DeployMode::DryRun,
            mode,
            failed_phase: None,
            error: None,
            config_hash: None,
            cluster: None,
            argocd: None,
            outputs: json!({}),
            change_summary: None,
            facts: None,
            timings: Vec::new(),
            warnings: Vec::new(),
            diagnostics: Vec::new(),
            execution_metadata: json!({}),
        }
    }

    /// Timings as `{phase: millis}`.
    pub fn timings_ms(&self) -> BTreeMap<&'static str, u64> {
        self.timings
            .iter()
            .map(|t| (t.phase.name(), t.millis))
            .collect()
    }

    fn metadata(&self, facts: Option<&InfraFacts>) -> Value {
        let databases: Vec<Value> = facts
            .map(|f| {
                f.databases
                    .iter()
                    .map(|d| {
                        json!({
                            "name": d.name,
                            "writer_endpoint": d.writer_endpoint,
                            "reader_endpoint": d.reader_endpoint,
                            "credentials_secret_arn": d.credentials_secret,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let caches: Vec<Value> = facts
            .map(|f| {
                f.caches
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "primary_endpoint": c.primary_endpoint,
                            "reader_endpoint": c.reader_endpoint,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "cluster_name": self.cluster.as_ref().map(|c| c.name.clone()),
            "cluster_endpoint": self.cluster.as_ref().and_then(|c| c.endpoint.clone()),
            "cluster_arn": self.cluster.as_ref().and_then(|c| c.arn.clone()),
            "argocd_url": self.argocd.as_ref().map(|a| a.url.url.clone()),
            "argocd_admin_password": self.argocd.as_ref().and_then(|a| a.admin_password.as_ref().map(|p| p.expose().clone())),
            "databases": databases,
            "caches": caches,
            "outputs": self.outputs,
            "change_summary": self.change_summary,
            "timings_ms": self.timings_ms(),
        })
    }
}

/// Errors of the DEPLOY-only steps (the terraform half reports [`PlanError`]).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The job cannot be run as given.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Cloud credentials could not be assumed.
    #[error(transparent)]
    Cloud(#[from] crate::cloud::CloudError),
    /// The preflight refused the job.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// A terraform command after apply (output, show) failed.
    #[error(transparent)]
    Terraform(terraform::TerraformError),
    /// The run needs a cluster and the cloud identity gives no credentials.
    #[error(
        "cloud identity `local` gives no cluster credentials: give a kubeconfig (tendril.kubernetes.kubeconfig in the job), or run a dry run or without the cluster"
    )]
    NoClusterCredentials,
    /// Facts could not be read from the outputs.
    #[error("{0}")]
    Facts(String),
    /// The cluster could not be reached.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Argo CD failed.
    #[error(transparent)]
    ArgoCd(#[from] argocd::ArgoCdError),
    /// The App of Apps failed.
    #[error(transparent)]
    AppOfApps(#[from] appofapps::AppOfAppsError),
    /// Applying the App of Apps failed.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// Runs a DEPLOY job. Never panics on bad input; the report says what failed.
#[tracing::instrument(name = "job", skip_all, fields(id = %job.job.id, job_type = "DEPLOY"))]
pub async fn run_deploy(
    job: &JobFile,
    opts: &DeployOptions,
    progress: &(dyn Fn(DeployEvent) + Send + Sync),
    cancel: &CancellationToken,
) -> DeployReport {
    let phase_sink = |e: PhaseEvent| progress(DeployEvent::Phase(e));
    let mut phases = Phases::new(&phase_sink);
    let mut report = DeployReport::new(job, opts.mode());
    let mut facts = None;
    let run = Run {
        job,
        opts,
        progress,
        cancel,
    };
    let result = run_phases(&run, &mut phases, &mut report, &mut facts).await;
    match result {
        Ok(()) => report.status = JobStatus::Success,
        Err(e) => {
            let cancelled = cancel.is_cancelled() || is_cancelled(&e);
            report.status = if cancelled {
                JobStatus::Cancelled
            } else {
                JobStatus::Failed
            };
            report.failed_phase = Some(e.phase);
            report.error = Some(error_text(&e));
            if let Some(r) = apply_report_of(&e) {
                report.diagnostics = ObjectDiagnostic::from_report(r);
            }
        }
    }
    report.timings = phases.into_timings();
    report.execution_metadata = report.metadata(facts.as_ref());
    if let Some(dir) = &opts.output_dir
        && let Err(e) = write_file(dir, "report.json", &report_json(&report), Mode::Secret)
    {
        report.warnings.push(e.to_string());
    }
    report
}

/// The apply engine's per-object report inside a phase error, if any.
fn apply_report_of(e: &PhaseError) -> Option<&crate::apply::ApplyReport> {
    match e.source.downcast_ref::<DeployError>()? {
        DeployError::ArgoCd(argocd::ArgoCdError::Apply(a)) | DeployError::Apply(a) => a.report(),
        _ => None,
    }
}

/// Replaces, anywhere in `v`, a string equal to a sensitive output's value
/// (or to a string inside it) with `[redacted]`.
fn redact_sensitive(v: &mut Value, sensitive: &[String]) {
    match v {
        Value::String(s) if sensitive.iter().any(|x| x == s) => {
            *s = "[redacted]".to_string();
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| redact_sensitive(i, sensitive)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|i| redact_sensitive(i, sensitive)),
        _ => {}
    }
}

/// The string values of the sensitive outputs (nested strings too).
fn sensitive_strings(outputs: &Outputs) -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            Value::Object(map) => map.values().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for o in outputs.0.values().filter(|o| o.is_sensitive()) {
        collect(o.expose(), &mut out);
    }
    out
}

fn is_cancelled(e: &PhaseError) -> bool {
    if let Some(p) = e.source.downcast_ref::<PlanError>() {
        return p.is_cancelled();
    }
    match e.source.downcast_ref::<DeployError>() {
        Some(DeployError::Cancelled) => true,
        Some(DeployError::Terraform(t)) => t.is_cancelled(),
        _ => false,
    }
}

/// The error and its causes on one line each.
fn error_text(e: &PhaseError) -> String {
    crate::errors::chain_lines(e)
}

fn report_json(report: &DeployReport) -> Vec<u8> {
    serde_json::to_vec_pretty(report).unwrap_or_default()
}

/// Writes `name` into the output directory safely ([`crate::outfile`]).
fn write_file(dir: &Path, name: &str, bytes: &[u8], mode: Mode) -> Result<PathBuf, DeployError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir).map_err(|source| DeployError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    crate::outfile::write(&path, bytes, mode).map_err(|e| DeployError::Write {
        path: path.clone(),
        source: match e {
            crate::outfile::OutfileError::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        },
    })?;
    Ok(path)
}

/// One DEPLOY run: the job, how to run it, where progress goes.
struct Run<'a> {
    job: &'a JobFile,
    opts: &'a DeployOptions,
    progress: &'a (dyn Fn(DeployEvent) + Send + Sync),
    cancel: &'a CancellationToken,
}

/// The outputs phase's result: the outputs, the facts (absent in a dry run
/// whose plan leaves required outputs unknown), and the unknown outputs.
struct ReadOutputs {
    outputs: Outputs,
    facts: Option<InfraFacts>,
    unknown: Vec<String>,
}

async fn run_phases(
    run: &Run<'_>,
    phases: &mut Phases<'_>,
    report: &mut DeployReport,
    facts_out: &mut Option<InfraFacts>,
) -> Result<(), PhaseError> {
    let Run {
        job,
        opts,
        progress,
        cancel,
    } = *run;
    let mode = opts.mode();
    let tf_sink = |e: TerraformEvent| progress(DeployEvent::Terraform(e));
    let apply_sink = |e: ApplyEvent| progress(DeployEvent::Apply(e));

    // 0. preflight: every input that can be checked before terraform runs
    let given = opts
        .kubeconfig
        .as_ref()
        .map(|(path, context)| KubeconfigRef {
            path: path.clone(),
            context: context.clone(),
        });
    let checked: Checked = phases
        .run(Phase::Preflight, async {
            preflight::preflight(&PreflightInput {
                job,
                mode,
                kubeconfig: given.as_ref(),
                output_dir: opts.output_dir.as_deref(),
            })
        })
        .await?;
    report.warnings.extend(checked.warnings.iter().cloned());
    for w in &checked.warnings {
        progress(DeployEvent::Note(w.clone()));
    }

    // 1. credentials
    let creds: JobCredentials = phases
        .run(Phase::Credentials, credentials::assume(job))
        .await?;

    // 2. the plan artifact
    let artifact: Artifact = phases
        .run(Phase::Artifact, async {
            let plan_job = job.job.plan_job_id.as_ref().map(|p| p.0.clone());
            let store = tf_steps::artifact_store(job, &creds.child_env)?;
            store
                .download(plan_job.as_deref().unwrap_or_default(), MAX_PLAN_BYTES)
                .await
        })
        .await?;

    // 3. the config hash, before any terraform command
    let hash: ConfigHash = phases
        .run(Phase::ConfigHash, async {
            let current = ConfigHash::of(&job.job.config_snapshot);
            artifact.check_config(&current)?;
            Ok::<_, crate::confighash::StalePlan>(current)
        })
        .await?;
    report.config_hash = Some(hash.to_string());

    // 4. terraform init
    let (ws, tf) = phases
        .run(Phase::TerraformInit, async {
            let ws = Workspace::create(job)?;
            artifact
                .write_plan(&ws.plan_file())
                .map_err(|source| PlanError::Artifact {
                    phase: tf_steps::Phase::Workspace,
                    source,
                })?;
            let (tf, init) = tf_steps::prepare_terraform(job, &ws, creds.child_env.clone()).await?;
            let here = tf.version().to_string();
            if here != artifact.manifest.terraform_version {
                return Err(PlanError::TerraformVersionMismatch {
                    planned: artifact.manifest.terraform_version.clone(),
                    here,
                });
            }
            tf.init(&init, &tf_sink, cancel)
                .await
                .map_err(|source| PlanError::Terraform {
                    phase: tf_steps::Phase::Init,
                    source,
                })?;
            Ok((ws, tf))
        })
        .await?;

    // 5. terraform apply of the saved plan (not in a dry run)
    let planned = serde_json::to_value(&artifact.manifest.change_summary).unwrap_or(Value::Null);
    if mode == DeployMode::DryRun {
        phases.skip(Phase::TerraformApply);
        report.change_summary = Some(json!({
            "add": artifact.manifest.change_summary.add,
            "change": artifact.manifest.change_summary.change,
            "remove": artifact.manifest.change_summary.remove,
            "applied": false,
            "planned": planned,
        }));
        progress(DeployEvent::Note(
            "dry run: terraform apply skipped; the plan is unchanged and can still be applied"
                .into(),
        ));
    } else {
        let applied = phases
            .run(Phase::TerraformApply, async {
                tf.apply(
                    &ws.plan_file(),
                    &terraform::ApplyOptions::default(),
                    &tf_sink,
                    cancel,
                )
                .await
                .map_err(|source| PlanError::Terraform {
                    phase: tf_steps::Phase::Apply,
                    source,
                })
            })
            .await?;
        report.change_summary = Some(json!({
            "add": applied.changes.add,
            "change": applied.changes.change,
            "remove": applied.changes.remove,
            "applied": true,
            "planned": planned,
        }));
        for w in &applied.warnings {
            if !w.is_error() {
                report.warnings.push(format!("terraform: {}", w.summary));
            }
        }
    }

    // 6. outputs → facts (a dry run reads the plan's known output values)
    let read = phases
        .run(Phase::Outputs, async {
            if mode == DeployMode::DryRun {
                let show = tf
                    .show_plan_json(&ws.plan_file(), cancel)
                    .await
                    .map_err(DeployError::Terraform)?;
                Ok::<_, DeployError>(planned_facts(job, &show))
            } else {
                let outputs = tf.output(cancel).await.map_err(DeployError::Terraform)?;
                let facts = facts_from(job, &outputs)?;
                Ok(ReadOutputs {
                    outputs,
                    facts: Some(facts),
                    unknown: Vec::new(),
                })
            }
        })
        .await?;
    drop(ws);
    if !read.unknown.is_empty() {
        report.warnings.push(format!(
            "dry run: outputs known only after apply, shown as `{}`: {}",
            planned::UNKNOWN,
            read.unknown.join(", ")
        ));
    }
    let outputs = read.outputs;
    report.outputs = if opts.include_sensitive_outputs {
        Value::Object(
            outputs
                .0
                .iter()
                .map(|(k, o)| (k.clone(), o.expose().clone()))
                .collect(),
        )
    } else {
        outputs.to_report_json()
    };
    let facts = match read.facts {
        Some(f) => f,
        None => {
            // a dry run whose plan leaves the cluster unknown: Argo CD is
            // rendered, the App of Apps needs the facts
            let note = "dry run: the plan leaves required outputs unknown, so the App of Apps (which needs the facts) is not rendered; Argo CD is".to_string();
            progress(DeployEvent::Note(note.clone()));
            report.warnings.push(note);
            phases.skip(Phase::KubeClient);
            phases.skip(Phase::ArgoCd);
            phases.skip(Phase::AppOfApps);
            return phases
                .run(Phase::Report, async {
                    write_argocd_yaml(opts, &checked)?;
                    finish(opts, progress).await
                })
                .await;
        }
    };
    report.cluster = Some(ClusterSummary {
        name: facts.cluster.name.clone(),
        endpoint: facts.cluster.endpoint.as_ref().map(|e| e.to_string()),
        arn: facts.cluster.id.clone(),
        region: facts.cluster.region.clone(),
        provider: facts.cluster.provider.as_str().to_string(),
    });
    report.facts = serde_json::to_value(&facts).ok();
    if !opts.include_sensitive_outputs {
        let sensitive = sensitive_strings(&outputs);
        if let Some(f) = report.facts.as_mut() {
            redact_sensitive(f, &sensitive);
        }
        // the report's own copy of the facts (metadata) must not carry them either
        let mut shown = facts.clone();
        for d in &mut shown.databases {
            if d.credentials_secret
                .as_ref()
                .is_some_and(|c| sensitive.contains(c))
            {
                d.credentials_secret = Some("[redacted]".to_string());
            }
        }
        *facts_out = Some(shown);
    } else {
        *facts_out = Some(facts.clone());
    }

    // 7. the kube client (none with --no-cluster, nor in a dry run without a kubeconfig)
    let client = phases
        .run(
            Phase::KubeClient,
            kube_client(opts, &checked, &creds, &facts, progress),
        )
        .await?;

    // 8. Argo CD
    let argocd_spec = &checked.argocd;
    let argocd_result = phases
        .run(Phase::ArgoCd, async {
            write_argocd_yaml(opts, &checked)?;
            match &client {
                Some(client) => {
                    let installed = argocd::install(
                        client,
                        argocd_spec,
                        &checked.argocd_render,
                        &InstallOptions {
                            dry_run: mode == DeployMode::DryRun,
                            field_manager: opts.field_manager.clone(),
                            lb_wait: opts.lb_wait,
                            now: jiff::Timestamp::now()
                                .strftime("%Y-%m-%dT%H:%M:%SZ")
                                .to_string(),
                        },
                        &apply_sink,
                    )
                    .await?;
                    Ok::<_, DeployError>(Some(installed))
                }
                None => {
                    progress(DeployEvent::Note(format!(
                        "no cluster: rendered {} Argo CD objects, applied nothing",
                        checked.argocd_render.manifests().len()
                    )));
                    Ok(None)
                }
            }
        })
        .await?;
    report.argocd = Some(match &argocd_result {
        Some(installed) => ArgoCdSummary {
            url: installed.url.clone(),
            admin_password: match &installed.admin_password {
                AdminPassword::Known(p) => Some(p.clone()),
                _ => None,
            },
            namespace: argocd_spec.namespace.clone(),
            objects: action_counts(&installed.report),
        },
        None => ArgoCdSummary {
            url: ArgoCdUrl {
                url: String::new(),
                note: Some("no cluster: nothing was installed".into()),
            },
            admin_password: None,
            namespace: argocd_spec.namespace.clone(),
            objects: BTreeMap::new(),
        },
    });
    if let Some(installed) = &argocd_result {
        if matches!(installed.admin_password, AdminPassword::NotRetrievable) {
            report.warnings.push(format!(
                "the Argo CD admin password is not retrievable: Secret {} no longer exists in namespace {} (it was rotated and deleted); preset tendril.argocd.admin_password to know it",
                argocd::INITIAL_ADMIN_SECRET,
                argocd_spec.namespace
            ));
        }
        if let Some(note) = &installed.url.note {
            report.warnings.push(format!("Argo CD URL: {note}"));
        }
    }

    // 9. the App of Apps
    let aoa = &checked.apps;
    phases
        .run(Phase::AppOfApps, async {
            let mut manifests = appofapps::render(&facts, aoa)?;
            if !checked.root_application {
                manifests = preflight::without_root(manifests);
            }
            if let Some(dir) = &opts.output_dir {
                // may hold the apps repository's password
                write_file(
                    dir,
                    "app-of-apps.yaml",
                    manifests_to_yaml(&manifests).as_bytes(),
                    Mode::Secret,
                )?;
            }
            if let Some(client) = &client {
                let dry_run = mode == DeployMode::DryRun;
                let how = appofapps::ApplyApps {
                    dry_run,
                    field_manager: opts.field_manager.clone(),
                    // without the root Application there is nothing to wait for
                    wait: job.tendril.apps.wait && checked.root_application && !dry_run,
                    timeout: job.tendril.argocd.timeout,
                };
                // A server dry run of Argo CD stores no CRDs, so on a cluster
                // without Argo CD the server cannot dry-run the Applications:
                // those are only rendered then.
                if dry_run && !serves_applications(client, &aoa.namespace).await {
                    let before = manifests.len();
                    manifests.retain(|m| {
                        !m.object
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.starts_with("argoproj.io/"))
                    });
                    progress(DeployEvent::Note(format!(
                        "dry run: the cluster does not serve Argo CD's kinds yet (its CRDs were only dry-run applied); {} Argo CD objects of the App of Apps were rendered, not sent",
                        before - manifests.len()
                    )));
                }
                if !manifests.is_empty() {
                    appofapps::apply(client, &aoa.namespace, manifests, &how, &apply_sink).await?;
                }
            }
            Ok::<_, DeployError>(())
        })
        .await?;

    // 10. the report
    phases.run(Phase::Report, finish(opts, progress)).await
}

/// The last phase: says where the outputs went (the report itself is
/// written after the timings are complete).
async fn finish(
    opts: &DeployOptions,
    progress: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<(), DeployError> {
    if let Some(dir) = &opts.output_dir {
        progress(DeployEvent::Note(format!(
            "report and manifests in {}",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes the preflight's Argo CD render (Redis password `[redacted]`) as
/// `argocd.yaml` when there is an output directory.
fn write_argocd_yaml(opts: &DeployOptions, checked: &Checked) -> Result<(), DeployError> {
    if let Some(dir) = &opts.output_dir {
        write_file(
            dir,
            "argocd.yaml",
            checked.argocd_render.to_yaml().as_bytes(),
            Mode::Secret,
        )?;
    }
    Ok(())
}

/// The outputs and facts a dry run can know: the plan's known output values,
/// the unknown ones shown as [`planned::UNKNOWN`].
fn planned_facts(job: &JobFile, show: &Value) -> ReadOutputs {
    let planned = PlannedOutputs::from_show_json(show);
    let unknown: Vec<String> = planned
        .unknown_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let marked = planned.with_markers().unwrap_or_default();
    // with markers first (the manifests show what is unknown); a marker can
    // be refused where a URL or certificate is needed, then without them
    let facts = facts_from(job, &marked).ok().or_else(|| {
        planned
            .known()
            .ok()
            .and_then(|known| facts_from(job, &known).ok())
    });
    ReadOutputs {
        outputs: marked,
        facts,
        unknown,
    }
}

/// Whether the cluster serves Argo CD's Application kind (its CRD is installed).
async fn serves_applications(client: &kube::Client, namespace: &str) -> bool {
    let gvk = kube::core::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let resource = kube::core::ApiResource::from_gvk_with_plural(&gvk, "applications");
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &resource);
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .is_ok()
}

fn action_counts(report: &crate::apply::ApplyReport) -> BTreeMap<&'static str, usize> {
    use crate::apply::Action;
    [
        Action::Created,
        Action::Configured,
        Action::Unchanged,
        Action::Recreated,
        Action::Pruned,
    ]
    .into_iter()
    .map(|a| (a.as_str(), report.count(a)))
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// Infrastructure facts from the outputs, with the job's mapping overrides.
pub fn facts_from(job: &JobFile, outputs: &Outputs) -> Result<InfraFacts, DeployError> {
    let doc = Value::Object(
        outputs
            .0
            .iter()
            .map(|(k, o)| {
                (
                    k.clone(),
                    json!({"value": o.expose(), "sensitive": o.is_sensitive()}),
                )
            })
            .collect(),
    );
    let vine = job.job.vine_config()?;
    let provider = match vine.provider {
        crate::job::Provider::Aws => Some(CloudProvider::Aws),
        crate::job::Provider::Gcp => Some(CloudProvider::Gcp),
        crate::job::Provider::Azure => Some(CloudProvider::Azure),
        crate::job::Provider::Local => InfraFacts::detect_provider(&doc),
    }
    .ok_or_else(|| {
        DeployError::Facts(
            "config_snapshot.provider is local and the outputs look like no known cloud's (no eks_/gke_/aks_ cluster outputs); map them with tendril.outputs".into(),
        )
    })?;
    let mapping = OutputMapping::with_overrides(provider, &job.tendril.outputs)
        .map_err(|e| DeployError::Facts(format!("tendril.outputs: {e}")))?;
    let mut facts = InfraFacts::from_outputs(provider, &doc, &mapping)
        .map_err(|e| DeployError::Facts(e.to_string()))?;
    if facts.cluster.region.is_none() {
        facts.cluster.region = Some(vine.region.clone());
    }
    Ok(facts)
}

async fn kube_client(
    opts: &DeployOptions,
    checked: &Checked,
    creds: &JobCredentials,
    facts: &InfraFacts,
    progress: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<Option<kube::Client>, DeployError> {
    let mode = opts.mode();
    // a kubeconfig for the cluster, for people (not in a dry run: the cluster
    // may not exist yet)
    if mode != DeployMode::DryRun
        && let Some(dir) = &opts.output_dir
        && facts.cluster.endpoint.is_some()
        && facts.cluster.ca.is_some()
    {
        let args = token_args(facts);
        let kc = kubeconfig::kubeconfig_for_cluster(
            &facts.cluster,
            &facts.cluster.name,
            &UserAuth::Exec {
                command: "tendril".into(),
                args,
            },
        )?;
        kubeconfig::write_kubeconfig(&dir.join("kubeconfig"), kc)?;
    }
    if mode == DeployMode::NoCluster {
        progress(DeployEvent::Note(
            "--no-cluster: the cluster is left alone; the manifests are only rendered".into(),
        ));
        return Ok(None);
    }
    if let Some(k) = &checked.kubeconfig {
        let client = kubeconfig::client_from_kubeconfig(&k.path, k.context.as_deref()).await?;
        return Ok(Some(client));
    }
    let client = match client_from_facts(creds, facts).await {
        Ok(Some(client)) => client,
        Ok(None) if mode == DeployMode::DryRun => {
            progress(DeployEvent::Note(
                "dry run without cluster credentials (cloud identity `local` and no kubeconfig): rendered only, no server dry run".into(),
            ));
            return Ok(None);
        }
        Ok(None) => {
            // preflight refuses this combination; kept for library callers
            return Err(DeployError::NoClusterCredentials);
        }
        Err(e) if mode == DeployMode::DryRun => {
            progress(DeployEvent::Note(format!(
                "dry run: the cluster is not reachable ({e}); rendered only, no server dry run"
            )));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(Some(client))
}

/// A verified client for the cluster in the facts, with the native token of
/// the job's cloud; `None` for cloud identity `local`.
async fn client_from_facts(
    creds: &JobCredentials,
    facts: &InfraFacts,
) -> Result<Option<kube::Client>, DeployError> {
    let mut cluster = facts.cluster.clone();
    let client = match (&creds.aws, &creds.gcp, &creds.azure) {
        (Some(aws), _, _) => {
            kubeconfig::eks::complete_from_describe(&mut cluster, aws).await?;
            let region = cluster
                .aws_region()
                .unwrap_or_else(|| aws.region().to_string());
            let tokens = kubeconfig::eks::EksTokenSource::new(aws.clone(), &cluster.name, &region);
            kubeconfig::client_for_cluster(&cluster, tokens)?
        }
        (_, Some(gcp), _) => {
            let tokens = kubeconfig::gke::GcpTokenSource::new(gcp.clone())?;
            kubeconfig::client_for_cluster(&cluster, tokens)?
        }
        (_, _, Some(azure)) => {
            kubeconfig::client_for_cluster(&cluster, kubeconfig::aks::token_source(azure.clone()))?
        }
        _ => return Ok(None),
    };
    kubeconfig::verify_access(&client, &cluster).await?;
    Ok(Some(client))
}

fn token_args(facts: &InfraFacts) -> Vec<String> {
    let c = &facts.cluster;
    match c.provider {
        CloudProvider::Aws => {
            let mut args = vec![
                "token".into(),
                "eks".into(),
                "--cluster".into(),
                c.name.clone(),
            ];
            if let Some(r) = &c.region {
                args.extend(["--region".into(), r.clone()]);
            }
            args
        }
        CloudProvider::Gcp => vec!["token".into(), "gke".into()],
        CloudProvider::Azure => vec!["token".into(), "aks".into()],
    }
}
