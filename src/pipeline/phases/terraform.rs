//! The terraform phases every job type shares: the scratch [`Workspace`],
//! `terraform init` ([`init`]), [`apply`] of a saved plan, [`destroy`], and
//! [`outputs`].
//!
//! A job's terraform runs in a scratch copy of the configuration (mode 0700,
//! removed when the job ends) with the job's child environment only; the
//! state lives in the job's backend, one state per vine.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::Secret;
use crate::artifact::{self, Artifact, ArtifactError};
use crate::job::{BackendConfig, JobError, JobFile, VineConfig};
use crate::terraform::{
    self, ApplyOptions, ApplyOutcome, Backend, DestroyOptions, InitOptions, Outputs, S3Settings,
    Terraform, TerraformError,
};

use crate::cloud::ChildEnv;
use crate::pipeline::Progress;
use tokio_util::sync::CancellationToken;

/// The profile name under which separate state-store keys are written.
pub const STATE_PROFILE: &str = "tendril-state";

/// What can go wrong in a terraform phase.
#[derive(Debug, thiserror::Error)]
pub enum TerraformPhaseError {
    /// A job field cannot be used (the backend's keys).
    #[error(transparent)]
    Job(#[from] JobError),
    /// A terraform command failed (or was cancelled).
    #[error(transparent)]
    Terraform(#[from] TerraformError),
    /// The saved plan could not be written into the workspace.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The plan was made by another terraform version than the one here.
    #[error(
        "the plan was made with terraform {planned} but this terraform is {here}; apply it with terraform {planned} or run a new PLAN job"
    )]
    VersionMismatch {
        /// The version in the artifact's manifest.
        planned: String,
        /// This terraform's version.
        here: String,
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

impl TerraformPhaseError {
    /// terraform's stderr, when a terraform command failed.
    pub fn terraform_stderr(&self) -> Option<&str> {
        match self {
            TerraformPhaseError::Terraform(t) => t.stderr(),
            _ => None,
        }
    }
}

/// A scratch directory for one job: `config/` (a copy of the terraform
/// configuration), the tfvars file, the saved plan, and the state-store
/// credentials file. Mode 0700; removed when dropped.
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
    pub fn create(job: &JobFile) -> Result<Workspace, TerraformPhaseError> {
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
        crate::outfile::private_dir(&root).map_err(|e| TerraformPhaseError::Workspace {
            action: "create",
            path: root.clone(),
            source: into_io(e),
        })?;
        let ws = Workspace { root };
        terraform::copy_configuration(&job.tendril.terraform.workdir, &ws.config_dir())?;
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

    /// Writes a private file (0600) into the workspace.
    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), TerraformPhaseError> {
        crate::outfile::write(path, bytes, crate::outfile::Mode::Secret).map_err(|e| {
            TerraformPhaseError::Workspace {
                action: "write",
                path: path.to_path_buf(),
                source: into_io(e),
            }
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn into_io(e: crate::outfile::OutfileError) -> std::io::Error {
    match e {
        crate::outfile::OutfileError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

/// What the workspace starts with besides the configuration.
#[derive(Debug, Clone, Copy)]
pub enum Seed<'a> {
    /// A tfvars file from `config_snapshot` (PLAN, DESTROY).
    Variables,
    /// The reviewed saved plan; its terraform version must be this one (DEPLOY).
    SavedPlan(&'a Artifact),
}

/// What `terraform init` needs.
#[derive(Debug, Clone, Copy)]
pub struct InitInput<'a> {
    /// The job.
    pub job: &'a JobFile,
    /// The vine, from the job's snapshot.
    pub vine: &'a VineConfig,
    /// The child environment (cloud credentials).
    pub env: &'a ChildEnv,
    /// What the workspace starts with.
    pub seed: Seed<'a>,
}

/// An initialized terraform: the workspace and the binary bound to it.
pub struct Initialized {
    /// The scratch workspace (removed when this is dropped).
    pub workspace: Workspace,
    /// terraform, bound to the workspace's configuration.
    pub terraform: Terraform,
    /// The tfvars file, when the workspace was seeded with variables.
    pub tfvars: Option<PathBuf>,
}

/// The terraform_init phase: workspace, seed, backend, `terraform init`.
pub async fn init(
    input: InitInput<'_>,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<Initialized, TerraformPhaseError> {
    let job = input.job;
    let workspace = Workspace::create(job)?;
    let tfvars = match input.seed {
        Seed::Variables => Some(write_tfvars(job, &workspace)?),
        Seed::SavedPlan(artifact) => {
            artifact.write_plan(&workspace.plan_file())?;
            None
        }
    };
    let (backend, extra) = backend_for(job, input.vine, &workspace)?;
    let mut env = input.env.clone();
    env.extend(extra);
    let binary = job
        .tendril
        .terraform
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("terraform"));
    let tf = Terraform::new(binary, workspace.config_dir(), env).await?;
    if let Seed::SavedPlan(artifact) = input.seed {
        let here = tf.version().to_string();
        if here != artifact.manifest.terraform_version {
            return Err(TerraformPhaseError::VersionMismatch {
                planned: artifact.manifest.terraform_version.clone(),
                here,
            });
        }
    }
    let sink = |e: terraform::Event| progress(crate::pipeline::JobEvent::Terraform(e));
    tf.init(
        &InitOptions {
            backend,
            reconfigure: false,
        },
        &sink,
        cancel,
    )
    .await?;
    Ok(Initialized {
        workspace,
        terraform: tf,
        tfvars,
    })
}

/// The terraform_apply phase: applies the saved plan, events forwarded live.
pub async fn apply(
    tf: &Initialized,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<ApplyOutcome, TerraformPhaseError> {
    let sink = |e: terraform::Event| progress(crate::pipeline::JobEvent::Terraform(e));
    Ok(tf
        .terraform
        .apply(
            &tf.workspace.plan_file(),
            &ApplyOptions::default(),
            &sink,
            cancel,
        )
        .await?)
}

/// The terraform_destroy phase: destroys everything in the state, events
/// forwarded live. The (empty) state stays in the backend for audit.
pub async fn destroy(
    tf: &Initialized,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<ApplyOutcome, TerraformPhaseError> {
    let sink = |e: terraform::Event| progress(crate::pipeline::JobEvent::Terraform(e));
    let opts = DestroyOptions {
        var_files: tf.tfvars.iter().cloned().collect(),
        lock_timeout: None,
    };
    Ok(tf.terraform.destroy(&opts, &sink, cancel).await?)
}

/// The outputs phase: `terraform output -json`, sensitive values as secrets.
pub async fn outputs(
    tf: &Initialized,
    cancel: &CancellationToken,
) -> Result<Outputs, TerraformPhaseError> {
    Ok(tf.terraform.output(cancel).await?)
}

/// terraform's warnings, one line each (summary and the first detail line),
/// without repeats.
pub fn warnings_of(diags: &[terraform::Diagnostic]) -> Vec<String> {
    let mut out: Vec<String> = diags
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| {
            let detail = d.detail.lines().find(|l| !l.trim().is_empty());
            match detail {
                Some(line) => format!("terraform: {}: {}", d.summary, line.trim()),
                None => format!("terraform: {}", d.summary),
            }
        })
        .collect();
    out.dedup();
    out
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
fn write_tfvars(job: &JobFile, ws: &Workspace) -> Result<PathBuf, TerraformPhaseError> {
    let path = ws.tfvars_file();
    let mut vars = job.job.config_snapshot.clone();
    if let Some(map) = vars.as_object_mut() {
        map.retain(|k, _| !RESERVED_VARIABLE_NAMES.contains(&k.as_str()));
    }
    let bytes = serde_json::to_vec_pretty(&vars).map_err(|e| TerraformPhaseError::Workspace {
        action: "serialize tfvars for",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    ws.write_private(&path, &bytes)?;
    Ok(path)
}

/// The backend of a job, plus what terraform's environment needs for it.
///
/// When `tendril.terraform.backend` carries its own access keys (a state
/// store that is not the cloud account's, e.g. Supabase Storage S3 keys),
/// they are written to a shared-credentials file in the workspace under the
/// profile [`STATE_PROFILE`] and the backend is told to use that profile:
/// neither the keys nor the file's path end up in the saved plan.
pub fn backend_for(
    job: &JobFile,
    vine: &VineConfig,
    ws: &Workspace,
) -> Result<(Backend, ChildEnv), TerraformPhaseError> {
    match &job.tendril.terraform.backend {
        BackendConfig::Local { local } => Ok((
            Backend::Local {
                path: local.state_path(&job.job.vineyard_id, vine),
            },
            Vec::new(),
        )),
        BackendConfig::S3(s3) => {
            let mut env = Vec::new();
            let mut profile = None;
            match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(id), Some(secret)) => {
                    let id = id.resolve("tendril.terraform.backend.access_key_id")?;
                    let secret = secret.resolve("tendril.terraform.backend.secret_access_key")?;
                    let path = ws.root.join("state-credentials");
                    let text = format!(
                        "[{STATE_PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                        id.expose(),
                        secret.expose()
                    );
                    ws.write_private(&path, text.as_bytes())?;
                    env.push((
                        "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                        Secret::new(path.display().to_string()),
                    ));
                    profile = Some(STATE_PROFILE.to_string());
                }
                (None, None) => {}
                _ => {
                    return Err(JobError::Invalid {
                        field: "tendril.terraform.backend".into(),
                        problem: "has only one of access_key_id and secret_access_key".into(),
                        fix: "give both, or neither to use the cloud identity's credentials".into(),
                    }
                    .into());
                }
            }
            Ok((
                Backend::S3(S3Settings {
                    bucket: s3.bucket.clone(),
                    key: s3.state_key(&job.job.vineyard_id, vine),
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
