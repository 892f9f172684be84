//! The PLAN job: tfvars from the config snapshot, init, plan, show, upload
//! the artifact; and the terraform half of a DEPLOY job (fetch and verify the
//! artifact, check the config hash, init, apply the saved plan, read outputs).
//!
//! Both run in a scratch [`Workspace`] (a copy of the configuration, removed
//! afterwards), time every phase, forward progress to a caller's sink, and
//! stop at the first error, naming the phase.

use crate::Secret;
use crate::artifact::{self, Artifact, ArtifactError, S3Credentials, Store};
use crate::confighash::{ConfigHash, StalePlan};
use crate::job::{BackendConfig, JobError, JobFile, JobType};
use crate::terraform::{
    self, ApplyOptions, Backend, ChangeCounts, ChangeSummary, Event, InitOptions, Outputs,
    PlanOptions, S3Settings, Terraform, TerraformError,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The phases of the PLAN job and of the terraform half of DEPLOY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Check the job and hash its configuration.
    Config,
    /// Fetch and verify the plan artifact, check the config hash (DEPLOY).
    Artifact,
    /// Copy the configuration into a scratch directory, write tfvars.
    Workspace,
    /// `terraform version` and `terraform init`.
    Init,
    /// `terraform plan`.
    Plan,
    /// `terraform show -json`.
    Show,
    /// Store the artifact (PLAN).
    Upload,
    /// `terraform apply` (DEPLOY).
    Apply,
    /// `terraform output -json` (DEPLOY).
    Outputs,
}

impl Phase {
    /// The phase's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Config => "config",
            Phase::Artifact => "artifact",
            Phase::Workspace => "workspace",
            Phase::Init => "init",
            Phase::Plan => "plan",
            Phase::Show => "show",
            Phase::Upload => "upload",
            Phase::Apply => "apply",
            Phase::Outputs => "outputs",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a PLAN (or the terraform half of a DEPLOY) job.
#[derive(Debug, Clone)]
pub enum PlanEvent {
    /// A phase started.
    PhaseStarted(Phase),
    /// A phase finished successfully after `millis`.
    PhaseFinished {
        /// The phase.
        phase: Phase,
        /// How long it took.
        millis: u64,
    },
    /// An event from terraform's JSON stream.
    Terraform(Event),
}

/// A caller's progress sink.
pub type ProgressSink<'a> = &'a (dyn Fn(PlanEvent) + Send + Sync);

/// What can go wrong in a PLAN job (or the terraform half of a DEPLOY).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The job file cannot be run as asked.
    #[error("{source}")]
    Job {
        /// The phase.
        phase: Phase,
        /// What is wrong.
        source: JobError,
    },
    /// `job.config_hash` is not the hash of `job.config_snapshot`.
    #[error(
        "job.config_hash is {given} but config_snapshot hashes to {computed}; the control plane and tendril disagree on the configuration, queue the job again"
    )]
    ConfigHashMismatch {
        /// The hash in the job.
        given: String,
        /// The hash tendril computed.
        computed: ConfigHash,
    },
    /// The configuration changed since the plan was made (DEPLOY). The
    /// message is exactly the contract's.
    #[error(transparent)]
    ConfigChanged(#[from] StalePlan),
    /// The artifact could not be stored or fetched, or failed verification.
    #[error("{source}")]
    Artifact {
        /// The phase.
        phase: Phase,
        /// The artifact error.
        source: ArtifactError,
    },
    /// The plan was made by another terraform version than the one here.
    #[error(
        "the plan was made with terraform {planned} but this terraform is {here}; apply it with terraform {planned} or run a new PLAN job"
    )]
    TerraformVersionMismatch {
        /// The version in the manifest.
        planned: String,
        /// This terraform's version.
        here: String,
    },
    /// A terraform command failed (or was cancelled).
    #[error("{source}")]
    Terraform {
        /// The phase.
        phase: Phase,
        /// The terraform error.
        source: TerraformError,
    },
    /// A scratch file could not be written.
    #[error("cannot {action} {path}: {source}")]
    Workspace {
        /// What tendril was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PlanError {
    /// Whether the job stopped because it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, PlanError::Terraform { source, .. } if source.is_cancelled())
    }

    /// The phase the job stopped in.
    pub fn phase(&self) -> Phase {
        match self {
            PlanError::Job { phase, .. }
            | PlanError::Artifact { phase, .. }
            | PlanError::Terraform { phase, .. } => *phase,
            PlanError::ConfigHashMismatch { .. } => Phase::Config,
            PlanError::ConfigChanged(_) | PlanError::TerraformVersionMismatch { .. } => {
                Phase::Artifact
            }
            PlanError::Workspace { .. } => Phase::Workspace,
        }
    }

    /// terraform's stderr, when a terraform command failed.
    pub fn terraform_stderr(&self) -> Option<&str> {
        match self {
            PlanError::Terraform { source, .. } => source.stderr(),
            _ => None,
        }
    }
}

/// Where a PLAN job's artifact went.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactInfo {
    /// The store's location of the artifact.
    pub location: String,
    /// sha256 of the plan file.
    pub plan_sha256: String,
    /// Size of the plan file in bytes.
    pub plan_size: u64,
}

/// The result of a PLAN job.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The PLAN job.
    pub job_id: String,
    /// `SUCCEEDED`.
    pub status: &'static str,
    /// The hash of the configuration snapshot the plan was made from.
    pub config_hash: ConfigHash,
    /// The terraform version.
    pub terraform_version: String,
    /// What the plan will change.
    pub change_summary: ChangeSummary,
    /// The stored artifact.
    pub artifact: ArtifactInfo,
    /// terraform's warnings (summaries).
    pub warnings: Vec<String>,
    /// Milliseconds per phase.
    pub timings_ms: BTreeMap<&'static str, u64>,
}

/// The result of the terraform half of a DEPLOY job.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The PLAN job whose plan was applied.
    pub plan_job_id: String,
    /// The manifest of the applied artifact.
    pub manifest: artifact::Manifest,
    /// The counts terraform reported for the apply.
    pub changes: ChangeCounts,
    /// The configuration's outputs (sensitive ones as secrets).
    pub outputs: Outputs,
    /// terraform's warnings (summaries).
    pub warnings: Vec<String>,
    /// Milliseconds per phase.
    pub timings_ms: BTreeMap<&'static str, u64>,
}

/// A scratch directory for one job: `config/` (a copy of the terraform
/// configuration), the tfvars file, the saved plan, and the state-store
/// credentials file. Removed when dropped.
pub struct Workspace {
    root: PathBuf,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("root", &self.root)
            .finish()
    }
}

impl Workspace {
    /// Creates a scratch directory under the system temp directory and copies
    /// the job's terraform configuration into it.
    pub fn create(job: &JobFile) -> Result<Workspace, PlanError> {
        let root = std::env::temp_dir().join(format!(
            "tendril-{}-{:016x}",
            job.job
                .id
                .0
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>(),
            rand::random::<u64>()
        ));
        // it holds the plan and the state store's keys: 0700
        crate::outfile::private_dir(&root).map_err(|e| PlanError::Workspace {
            action: "create",
            path: root.clone(),
            source: match e {
                crate::outfile::OutfileError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })?;
        let ws = Workspace { root };
        terraform::copy_configuration(&job.tendril.terraform.workdir, &ws.config_dir()).map_err(
            |source| PlanError::Terraform {
                phase: Phase::Workspace,
                source,
            },
        )?;
        Ok(ws)
    }

    /// The scratch directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The copy of the configuration terraform runs in.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// Where the saved plan goes.
    pub fn plan_file(&self) -> PathBuf {
        self.root.join(artifact::PLAN_FILE)
    }

    /// Where the tfvars file goes.
    pub fn tfvars_file(&self) -> PathBuf {
        self.root.join("tendril.tfvars.json")
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), PlanError> {
        artifact::write_atomic(path, bytes).map_err(|e| PlanError::Workspace {
            action: "write",
            path: path.to_path_buf(),
            source: match e {
                ArtifactError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Variables from tendril's environment that a `local` job passes to
/// terraform: cloud SDK settings (`AWS_*`, `GOOGLE_*`, `CLOUDSDK_*`, `ARM_*`,
/// `AZURE_*`). `TF_*` variables are never passed.
pub fn local_child_env() -> Vec<(String, Secret<String>)> {
    const PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "CLOUDSDK_", "ARM_", "AZURE_"];
    let mut vars: Vec<(String, Secret<String>)> = std::env::vars()
        .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Variables for a terraform child, secret values wrapped.
pub type ChildEnv = Vec<(String, Secret<String>)>;

/// The profile name under which separate state-store keys are written.
pub const STATE_PROFILE: &str = "tendril-state";

/// The backend of a job, plus what terraform's environment needs for it.
///
/// When `tendril.terraform.backend` carries its own access keys (a state
/// store that is not the cloud account's, e.g. Supabase Storage S3 keys),
/// they are written to a shared-credentials file in the workspace under the
/// profile [`STATE_PROFILE`] and the backend is told to use that profile:
/// neither the keys nor the file's path end up in the saved plan.
pub fn backend_for(job: &JobFile, ws: &Workspace) -> Result<(Backend, ChildEnv), PlanError> {
    let job_err = |source| PlanError::Job {
        phase: Phase::Init,
        source,
    };
    match &job.tendril.terraform.backend {
        BackendConfig::Local { local } => {
            let vine = job.job.vine_config().map_err(job_err)?;
            Ok((
                Backend::Local {
                    path: local.state_path(&job.job.vineyard_id, &vine),
                },
                Vec::new(),
            ))
        }
        BackendConfig::S3(s3) => {
            let vine = job.job.vine_config().map_err(job_err)?;
            let mut env = Vec::new();
            let mut profile = None;
            match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(id), Some(secret)) => {
                    let id = id
                        .resolve("tendril.terraform.backend.access_key_id")
                        .map_err(job_err)?;
                    let secret = secret
                        .resolve("tendril.terraform.backend.secret_access_key")
                        .map_err(job_err)?;
                    let path = ws.root.join("state-credentials");
                    let text = format!(
                        "[{STATE_PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                        id.expose(),
                        secret.expose()
                    );
                    ws.write(&path, text.as_bytes())?;
                    restrict_permissions(&path)?;
                    env.push((
                        "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                        Secret::new(path.display().to_string()),
                    ));
                    profile = Some(STATE_PROFILE.to_string());
                }
                (None, None) => {}
                _ => {
                    return Err(job_err(JobError::Invalid {
                        field: "tendril.terraform.backend".into(),
                        problem: "has only one of access_key_id and secret_access_key".into(),
                        fix: "give both, or neither to use the cloud identity's credentials".into(),
                    }));
                }
            }
            Ok((
                Backend::S3(S3Settings {
                    bucket: s3.bucket.clone(),
                    key: s3.state_key(&job.job.vineyard_id, &vine),
                    region: s3.region.clone().unwrap_or_else(|| vine.region.clone()),
                    endpoint: s3.endpoint.clone(),
                    use_path_style: s3.use_path_style.unwrap_or(s3.endpoint.is_some()),
                    use_lockfile: s3.use_lockfile.unwrap_or(true),
                    profile,
                }),
                env,
            ))
        }
    }
}

fn restrict_permissions(path: &Path) -> Result<(), PlanError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| PlanError::Workspace {
                action: "restrict permissions of",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

/// The artifact store of a job. S3 stores sign with the AWS credentials in
/// `child_env`, else those in tendril's environment.
pub fn artifact_store(
    job: &JobFile,
    child_env: &[(String, Secret<String>)],
) -> Result<Store, ArtifactError> {
    let creds = S3Credentials::from_vars(child_env).or_else(S3Credentials::from_env);
    Store::from_config(&job.tendril.artifacts, creds)
}

/// Hashes `job.config_snapshot`, checking it against `job.config_hash` when given.
pub fn config_hash_of(job: &JobFile) -> Result<ConfigHash, PlanError> {
    let computed = ConfigHash::of(&job.job.config_snapshot);
    if let Some(given) = &job.job.config_hash {
        let matches = given
            .parse::<ConfigHash>()
            .map(|g| g == computed)
            .unwrap_or(false);
        if !matches {
            return Err(PlanError::ConfigHashMismatch {
                given: given.clone(),
                computed,
            });
        }
    }
    Ok(computed)
}

/// Downloads the artifact of the DEPLOY job's `plan_job_id`, verifies its
/// digest, and refuses it when the configuration changed since the plan
/// ([`PlanError::ConfigChanged`], with the contract's message). No terraform
/// command runs here.
pub async fn fetch_plan_artifact(
    job: &JobFile,
    child_env: &[(String, Secret<String>)],
    max_plan_bytes: u64,
) -> Result<Artifact, PlanError> {
    let current = config_hash_of(job)?;
    let plan_job = job.job.plan_job_id.as_ref().ok_or_else(|| PlanError::Job {
        phase: Phase::Artifact,
        source: JobError::Invalid {
            field: "job.plan_job_id".into(),
            problem: "is missing".into(),
            fix: "name the PLAN job whose artifact to apply".into(),
        },
    })?;
    let art_err = |source| PlanError::Artifact {
        phase: Phase::Artifact,
        source,
    };
    let store = artifact_store(job, child_env).map_err(art_err)?;
    let artifact = store
        .download(&plan_job.0, max_plan_bytes)
        .await
        .map_err(art_err)?;
    artifact.check_config(&current)?;
    Ok(artifact)
}

/// Binds terraform to the workspace with `child_env` (plus what the backend
/// needs) and returns it with its init options.
pub async fn prepare_terraform(
    job: &JobFile,
    ws: &Workspace,
    child_env: Vec<(String, Secret<String>)>,
) -> Result<(Terraform, InitOptions), PlanError> {
    let (backend, extra) = backend_for(job, ws)?;
    let mut env = child_env;
    env.extend(extra);
    let binary = job
        .tendril
        .terraform
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("terraform"));
    let tf = Terraform::new(binary, ws.config_dir(), env)
        .await
        .map_err(|source| PlanError::Terraform {
            phase: Phase::Init,
            source,
        })?;
    Ok((
        tf,
        InitOptions {
            backend,
            reconfigure: false,
        },
    ))
}

struct Timer<'a> {
    timings: BTreeMap<&'static str, u64>,
    progress: ProgressSink<'a>,
}

impl<'a> Timer<'a> {
    async fn phase<T, F>(&mut self, phase: Phase, fut: F) -> Result<T, PlanError>
    where
        F: std::future::Future<Output = Result<T, PlanError>>,
    {
        (self.progress)(PlanEvent::PhaseStarted(phase));
        let start = Instant::now();
        let out =
            tracing::Instrument::instrument(fut, tracing::info_span!("phase", %phase)).await?;
        let millis = start.elapsed().as_millis() as u64;
        self.timings.insert(phase.as_str(), millis);
        (self.progress)(PlanEvent::PhaseFinished { phase, millis });
        Ok(out)
    }
}

fn tf_err(phase: Phase) -> impl Fn(TerraformError) -> PlanError {
    move |source| PlanError::Terraform { phase, source }
}

/// Names terraform reserves: no module can declare a variable called so.
const RESERVED_VARIABLE_NAMES: &[&str] = &[
    "count",
    "depends_on",
    "for_each",
    "lifecycle",
    "locals",
    "provider",
    "providers",
    "source",
    "version",
];

/// Writes the tfvars file: every top-level key of `config_snapshot` becomes
/// a variable value (terraform warns about, and ignores, undeclared ones),
/// except the names terraform reserves (e.g. the snapshot's `provider`),
/// which no module can declare and would only ever warn.
fn write_tfvars(job: &JobFile, ws: &Workspace) -> Result<PathBuf, PlanError> {
    let path = ws.tfvars_file();
    let mut vars = job.job.config_snapshot.clone();
    if let Some(map) = vars.as_object_mut() {
        map.retain(|k, _| !RESERVED_VARIABLE_NAMES.contains(&k.as_str()));
    }
    let bytes = serde_json::to_vec_pretty(&vars).map_err(|e| PlanError::Workspace {
        action: "serialize tfvars for",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    ws.write(&path, &bytes)?;
    Ok(path)
}

fn warnings_of(diags: &[terraform::Diagnostic]) -> Vec<String> {
    let mut out: Vec<String> = diags
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| {
            let detail = d.detail.lines().find(|l| !l.trim().is_empty());
            match detail {
                Some(line) => format!("{}: {}", d.summary, line.trim()),
                None => d.summary.clone(),
            }
        })
        .collect();
    out.dedup();
    out
}

/// Runs a PLAN job: config hash, workspace + tfvars, init, plan, show, upload.
///
/// `child_env` is what terraform gets on top of the allow-listed variables
/// (cloud credentials; see [`local_child_env`] for provider `local`).
#[tracing::instrument(name = "job", skip_all, fields(id = %job.job.id, job_type = "PLAN"))]
pub async fn run_plan(
    job: &JobFile,
    child_env: Vec<(String, Secret<String>)>,
    progress: ProgressSink<'_>,
    cancel: &CancellationToken,
) -> Result<PlanReport, PlanError> {
    let mut t = Timer {
        timings: BTreeMap::new(),
        progress,
    };
    let tf_sink = |e: Event| progress(PlanEvent::Terraform(e));

    let config_hash = t
        .phase(Phase::Config, async {
            if job.job.job_type != JobType::Plan {
                return Err(PlanError::Job {
                    phase: Phase::Config,
                    source: JobError::Invalid {
                        field: "job.job_type".into(),
                        problem: format!(
                            "is {} but `tendril plan` runs PLAN jobs",
                            job.job.job_type
                        ),
                        fix: "run DEPLOY jobs with `tendril deploy`".into(),
                    },
                });
            }
            artifact::check_job_id(&job.job.id.0).map_err(|source| PlanError::Artifact {
                phase: Phase::Config,
                source,
            })?;
            job.job.vine_config().map_err(|source| PlanError::Job {
                phase: Phase::Config,
                source,
            })?;
            config_hash_of(job)
        })
        .await?;

    let (ws, vars) = t
        .phase(Phase::Workspace, async {
            let ws = Workspace::create(job)?;
            let vars = write_tfvars(job, &ws)?;
            Ok((ws, vars))
        })
        .await?;

    let tf = t
        .phase(Phase::Init, async {
            let (tf, init) = prepare_terraform(job, &ws, child_env.clone()).await?;
            tf.init(&init, &tf_sink, cancel)
                .await
                .map_err(tf_err(Phase::Init))?;
            Ok(tf)
        })
        .await?;

    let planned = t
        .phase(Phase::Plan, async {
            tf.plan(
                &PlanOptions {
                    out: ws.plan_file(),
                    var_files: vec![vars.clone()],
                    ..Default::default()
                },
                &tf_sink,
                cancel,
            )
            .await
            .map_err(tf_err(Phase::Plan))
        })
        .await?;

    let summary = t
        .phase(Phase::Show, async {
            tf.show_plan(&ws.plan_file(), cancel)
                .await
                .map_err(tf_err(Phase::Show))
        })
        .await?;

    let artifact_info = t
        .phase(Phase::Upload, async {
            let art_err = |source| PlanError::Artifact {
                phase: Phase::Upload,
                source,
            };
            let plan = std::fs::read(ws.plan_file()).map_err(|source| PlanError::Workspace {
                action: "read",
                path: ws.plan_file(),
                source,
            })?;
            let manifest = artifact::Manifest::new(
                &job.job.id.0,
                config_hash,
                &plan,
                tf.version().to_string(),
                summary.clone(),
            );
            let store = artifact_store(job, &child_env).map_err(art_err)?;
            let location = store
                .upload(&job.job.id.0, &plan, &manifest)
                .await
                .map_err(art_err)?;
            Ok(ArtifactInfo {
                location,
                plan_sha256: manifest.plan_sha256,
                plan_size: manifest.plan_size,
            })
        })
        .await?;

    Ok(PlanReport {
        job_id: job.job.id.0.clone(),
        status: "SUCCEEDED",
        config_hash,
        terraform_version: tf.version().to_string(),
        change_summary: summary,
        artifact: artifact_info,
        warnings: warnings_of(&planned.warnings),
        timings_ms: t.timings,
    })
}

/// The terraform half of a DEPLOY job: fetch and verify the artifact of
/// `plan_job_id`, check the config hash (before any terraform command),
/// prepare the workspace, init, apply the saved plan with events forwarded
/// live, and read the outputs.
pub async fn apply_planned(
    job: &JobFile,
    child_env: Vec<(String, Secret<String>)>,
    max_plan_bytes: u64,
    progress: ProgressSink<'_>,
    cancel: &CancellationToken,
) -> Result<ApplyReport, PlanError> {
    let mut t = Timer {
        timings: BTreeMap::new(),
        progress,
    };
    let tf_sink = |e: Event| progress(PlanEvent::Terraform(e));

    let artifact = t
        .phase(
            Phase::Artifact,
            fetch_plan_artifact(job, &child_env, max_plan_bytes),
        )
        .await?;
    let plan_job_id = artifact.manifest.job_id.clone();

    let ws = t
        .phase(Phase::Workspace, async {
            let ws = Workspace::create(job)?;
            artifact
                .write_plan(&ws.plan_file())
                .map_err(|source| PlanError::Artifact {
                    phase: Phase::Workspace,
                    source,
                })?;
            Ok(ws)
        })
        .await?;

    let tf = t
        .phase(Phase::Init, async {
            let (tf, init) = prepare_terraform(job, &ws, child_env.clone()).await?;
            let here = tf.version().to_string();
            if here != artifact.manifest.terraform_version {
                return Err(PlanError::TerraformVersionMismatch {
                    planned: artifact.manifest.terraform_version.clone(),
                    here,
                });
            }
            tf.init(&init, &tf_sink, cancel)
                .await
                .map_err(tf_err(Phase::Init))?;
            Ok(tf)
        })
        .await?;

    let applied = t
        .phase(Phase::Apply, async {
            tf.apply(&ws.plan_file(), &ApplyOptions::default(), &tf_sink, cancel)
                .await
                .map_err(tf_err(Phase::Apply))
        })
        .await?;

    let outputs = t
        .phase(Phase::Outputs, async {
            tf.output(cancel).await.map_err(tf_err(Phase::Outputs))
        })
        .await?;

    Ok(ApplyReport {
        plan_job_id,
        manifest: artifact.manifest,
        changes: applied.changes,
        outputs,
        warnings: warnings_of(&applied.warnings),
        timings_ms: t.timings,
    })
}
