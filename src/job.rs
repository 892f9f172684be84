//! Job spec types, parsing, validation.
//!
//! A job file (see `docs/job.md`) has three parts: `job` and `cloud_identity`
//! have the shape of the control plane's claim response, and `tendril` says how
//! this runner reaches things. [`JobFile::load`] reads one from YAML or JSON,
//! resolves relative paths against the file's directory, and validates it.
//!
//! ```
//! let text = r#"
//! job:
//!   id: 3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10
//!   job_type: PLAN
//!   vine_id: v1
//!   vineyard_id: vy1
//!   config_snapshot: {project_name: shop, environment: prod, region: eu-west-1, provider: aws}
//! cloud_identity: {provider: local}
//! tendril:
//!   terraform: {workdir: infra, backend: {local: {path: state/terraform.tfstate}}}
//!   artifacts: {store: local, dir: artifacts}
//! "#;
//! let job = tendril::job::JobFile::parse(text, std::path::Path::new("/srv/jobs")).unwrap();
//! assert_eq!(job.job.job_type, tendril::job::JobType::Plan);
//! assert_eq!(job.tendril.terraform.workdir, std::path::Path::new("/srv/jobs/infra"));
//! ```

use crate::Secret;
use crate::cloud::Provider;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What can go wrong reading a job file.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("cannot read job file {path}: {source}")]
    Read {
        /// The job file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON of the job shape.
    #[error("job file {path} is not a valid job: {message}")]
    Parse {
        /// The job file (or `<input>` for text).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has a value tendril cannot use.
    #[error("job field `{field}` {problem}; {fix}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A secret given as `{env: NAME}` or `{file: PATH}` could not be resolved.
    #[error("job field `{field}`: {problem}")]
    Secret {
        /// Dotted path of the field.
        field: String,
        /// What is wrong (never the secret itself).
        problem: String,
    },
}

fn invalid(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> JobError {
    JobError::Invalid {
        field: field.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// A whole job file: the claimed job, the cloud identity, and runner settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job as the control plane's claim response carries it.
    pub job: Job,
    /// Whose cloud credentials the job runs with.
    pub cloud_identity: CloudIdentity,
    /// How this runner reaches things (not sent by the control plane).
    #[serde(default)]
    pub tendril: RunnerConfig,
}

/// The identifier of a job (`provision_jobs.id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobType {
    /// terraform plan, then store the artifact.
    Plan,
    /// apply the stored plan and install the platform.
    Deploy,
    /// tear down what the cluster created, then terraform destroy.
    Destroy,
}

/// How a job ended: the one status vocabulary of the report, the job
/// process's result and the queues (`SUCCESS`, `FAILED`, `CANCELLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Every phase finished.
    Success,
    /// A phase failed.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl JobStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "SUCCESS",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobType::Plan => "PLAN",
            JobType::Deploy => "DEPLOY",
            JobType::Destroy => "DESTROY",
        })
    }
}

/// The job part of a job file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// `provision_jobs.id`.
    pub id: JobId,
    /// PLAN or DEPLOY.
    pub job_type: JobType,
    /// The vine (one platform instance) the job is for.
    pub vine_id: String,
    /// The vineyard (the account/organisation) the vine belongs to.
    pub vineyard_id: String,
    /// DEPLOY: the PLAN job whose artifact is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_job_id: Option<JobId>,
    /// The vine's configuration, frozen at queue time. Kept as given: it is
    /// what the config hash is computed over.
    pub config_snapshot: serde_json::Value,
    /// Optional `sha256:<hex>`; when present it must equal the snapshot's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl Job {
    /// The typed view of the fields of `config_snapshot` that tendril reads.
    pub fn vine_config(&self) -> Result<VineConfig, JobError> {
        VineConfig::deserialize(&self.config_snapshot).map_err(|e| {
            invalid(
                "job.config_snapshot",
                format!("is not a vine configuration: {e}"),
                "give at least project_name, environment, region and provider",
            )
        })
    }
}

/// The parts of a vine configuration snapshot that tendril itself reads.
/// Everything else in the snapshot goes to Terraform as variables untouched.
#[derive(Debug, Clone, Deserialize)]
pub struct VineConfig {
    /// Project name (part of the state key).
    pub project_name: String,
    /// Stage: dev, staging, prod, ...
    pub environment: String,
    /// Cloud region.
    pub region: String,
    /// Cloud provider of the infrastructure; `None` for `local` (no cloud:
    /// the facts' provider is then told from the outputs' names).
    #[serde(deserialize_with = "provider_or_local")]
    pub provider: Option<Provider>,
    /// Where the platform's applications live.
    #[serde(default)]
    pub repositories: Option<Repositories>,
}

/// `config_snapshot.repositories`.
#[derive(Debug, Clone, Deserialize)]
pub struct Repositories {
    /// The Git repository the App of Apps points at.
    #[serde(default)]
    pub apps_destination_repo: Option<String>,
    /// Path inside that repository.
    #[serde(default)]
    pub apps_path: Option<String>,
}

/// `config_snapshot.provider`: a cloud, or `local` (no cloud) as `None`.
fn provider_or_local<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Provider>, D::Error> {
    let name = String::deserialize(d)?;
    if name == "local" {
        return Ok(None);
    }
    Provider::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .map(Some)
        .ok_or_else(|| {
            let known: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown provider `{name}`, expected {} or local",
                known.join(", ")
            ))
        })
}

/// The name of a provider or of none (`local`), for messages.
fn provider_name(p: Option<Provider>) -> &'static str {
    p.map_or("local", Provider::as_str)
}

/// Whose cloud credentials a job runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum CloudIdentity {
    /// AWS: assume `role_arn` with `external_id`.
    Aws {
        /// The role to assume, `arn:aws:iam::<account>:role/<name>`.
        role_arn: String,
        /// The external ID the role's trust policy requires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<Secret<String>>,
    },
    /// GCP: workload identity federation, optionally impersonating a service account.
    Gcp {
        /// The project.
        project_id: String,
        /// The service account to impersonate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_account_email: Option<String>,
        /// Workload identity federation settings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wif_config: Option<GcpWifConfig>,
    },
    /// Azure: federated client credentials (or a client secret).
    Azure {
        /// Entra tenant.
        tenant_id: String,
        /// App registration / managed identity client ID.
        client_id: String,
        /// Subscription the infrastructure lives in.
        subscription_id: String,
    },
    /// No cloud credentials: terraform runs with what the environment gives it.
    Local,
}

impl CloudIdentity {
    /// The provider this identity belongs to; `None` for `local`.
    pub fn provider(&self) -> Option<Provider> {
        match self {
            CloudIdentity::Aws { .. } => Some(Provider::Aws),
            CloudIdentity::Gcp { .. } => Some(Provider::Gcp),
            CloudIdentity::Azure { .. } => Some(Provider::Azure),
            CloudIdentity::Local => None,
        }
    }
}

/// GCP workload identity federation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcpWifConfig {
    /// Workload identity pool ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    /// Pool provider ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The STS audience (`//iam.googleapis.com/projects/.../providers/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Anything else of the credential configuration (subject token source, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `tendril` part of a job file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// The Terraform configuration and its backend.
    #[serde(default)]
    pub terraform: TerraformConfig,
    /// Where PLAN puts and DEPLOY takes the plan artifact.
    #[serde(default)]
    pub artifacts: ArtifactStoreConfig,
    /// Overrides of the output-name → fact mapping (fact key → output name).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// An existing kubeconfig instead of building access from outputs.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// The Argo CD install.
    #[serde(default)]
    pub argocd: ArgoCdConfig,
    /// The App of Apps.
    #[serde(default)]
    pub apps: AppsConfig,
    /// The teardown a DESTROY job runs before `terraform destroy`.
    #[serde(default)]
    pub teardown: TeardownConfig,
}

/// `tendril.teardown`: what a DESTROY job deletes from the cluster before
/// `terraform destroy`, and how long it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownConfig {
    /// How long to wait, in all, for the deleted objects to be gone.
    #[serde(default = "default_teardown_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Run `terraform destroy` even when objects remain after the wait
    /// (their cloud resources may outlive the destroy, or block it).
    #[serde(default)]
    pub continue_on_remaining: bool,
}

fn default_teardown_timeout() -> Duration {
    Duration::from_secs(600)
}

impl Default for TeardownConfig {
    fn default() -> Self {
        TeardownConfig {
            timeout: default_teardown_timeout(),
            continue_on_remaining: false,
        }
    }
}

/// `tendril.terraform`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerraformConfig {
    /// The configuration to plan/apply.
    #[serde(default = "default_workdir")]
    pub workdir: PathBuf,
    /// The terraform binary (default: `terraform` on PATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Where the state lives.
    #[serde(default)]
    pub backend: BackendConfig,
}

fn default_workdir() -> PathBuf {
    PathBuf::from(".")
}

impl Default for TerraformConfig {
    fn default() -> Self {
        TerraformConfig {
            workdir: default_workdir(),
            binary: None,
            backend: BackendConfig::default(),
        }
    }
}

/// The state backend: S3 (or S3-compatible) or a local file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BackendConfig {
    /// `{local: {path: ...}}`.
    Local {
        /// The local backend.
        local: LocalBackend,
    },
    /// S3 fields (all defaulted).
    S3(S3Backend),
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::S3(S3Backend::default())
    }
}

/// A local state file, one per vine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBackend {
    /// The state file: a path template with the S3 key's placeholders
    /// `{vineyard}`, `{project}`, `{stage}`, `{region}` (default
    /// `{vineyard}/{project}/{stage}/{region}/terraform.tfstate`, relative to
    /// the job file's or runner configuration's directory), so that vines
    /// never share a state.
    #[serde(default = "default_local_state_path")]
    pub path: PathBuf,
}

fn default_local_state_path() -> PathBuf {
    PathBuf::from(default_state_key())
}

impl LocalBackend {
    /// The vine's state file: the path with its placeholders filled in.
    pub fn state_path(&self, vineyard: &str, vine: &VineConfig) -> PathBuf {
        PathBuf::from(
            self.path
                .to_string_lossy()
                .replace("{vineyard}", vineyard)
                .replace("{project}", &vine.project_name)
                .replace("{stage}", &vine.environment)
                .replace("{region}", &vine.region),
        )
    }
}

/// The S3 backend settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Backend {
    /// The state bucket.
    #[serde(default = "default_state_bucket")]
    pub bucket: String,
    /// The state key template: `{vineyard}`, `{project}`, `{stage}`, `{region}`.
    #[serde(default = "default_state_key")]
    pub key: String,
    /// The bucket's region (default: the vine's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A custom S3-compatible endpoint (Supabase Storage, moto, MinIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Use path-style addressing (default: true when an endpoint is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_path_style: Option<bool>,
    /// Access key for the state store when it is not the cloud account's
    /// (e.g. Supabase Storage S3 keys); passed to terraform only through its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretValue>,
    /// Secret key matching `access_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretValue>,
    /// Lock the state with a lock object next to it (`use_lockfile`; default
    /// true, ignored before terraform 1.10). Turn off for stores without
    /// conditional writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_lockfile: Option<bool>,
}

fn default_state_bucket() -> String {
    "vine-terraform-state".to_string()
}
fn default_state_key() -> String {
    "{vineyard}/{project}/{stage}/{region}/terraform.tfstate".to_string()
}

impl Default for S3Backend {
    fn default() -> Self {
        S3Backend {
            bucket: default_state_bucket(),
            key: default_state_key(),
            region: None,
            endpoint: None,
            use_path_style: None,
            access_key_id: None,
            secret_access_key: None,
            use_lockfile: None,
        }
    }
}

impl S3Backend {
    /// The state key with `{vineyard}`, `{project}`, `{stage}` and `{region}` filled in.
    pub fn state_key(&self, vineyard: &str, vine: &VineConfig) -> String {
        self.key
            .replace("{vineyard}", vineyard)
            .replace("{project}", &vine.project_name)
            .replace("{stage}", &vine.environment)
            .replace("{region}", &vine.region)
    }
}

/// `tendril.artifacts`: where plan artifacts are stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase", deny_unknown_fields)]
pub enum ArtifactStoreConfig {
    /// Supabase Storage's object API.
    Supabase {
        /// The project URL, `https://<project>.supabase.co`.
        url: String,
        /// The bucket (default `plan-artifacts`).
        #[serde(default = "default_artifact_bucket")]
        bucket: String,
        /// The service key sent as `apikey` and bearer token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_key: Option<SecretValue>,
    },
    /// Any S3-compatible store.
    S3 {
        /// The bucket (default `plan-artifacts`).
        #[serde(default = "default_artifact_bucket")]
        bucket: String,
        /// The bucket's region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// A custom endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// A key prefix inside the bucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    /// A directory on this machine.
    Local {
        /// The directory.
        dir: PathBuf,
    },
}

fn default_artifact_bucket() -> String {
    "plan-artifacts".to_string()
}

impl Default for ArtifactStoreConfig {
    fn default() -> Self {
        ArtifactStoreConfig::Local {
            dir: PathBuf::from("artifacts"),
        }
    }
}

/// `tendril.kubernetes`: use an existing kubeconfig instead of building access.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The context in it (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// This runner leaves clusters alone: a DEPLOY applies terraform and
    /// writes the manifests, as `tendril deploy --no-cluster` does (for a
    /// worker that only runs terraform).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cluster: bool,
}

/// `tendril.argocd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoCdConfig {
    /// Namespace to install into.
    #[serde(default = "default_argocd_namespace")]
    pub namespace: String,
    /// How long to wait for Argo CD to become ready.
    #[serde(default = "default_argocd_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Values merged over the embedded chart's values.
    #[serde(default = "empty_map")]
    pub values: serde_json::Value,
    /// Optional preset admin password (stored in the cluster only as a bcrypt hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<SecretValue>,
    /// Another chart (directory or `.tgz`) instead of the embedded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<PathBuf>,
    /// Refuse `values` the chart does not act on (unsupported or unknown
    /// keys) instead of reporting them as warnings.
    #[serde(default)]
    pub strict_values: bool,
}

fn default_argocd_namespace() -> String {
    "argocd".to_string()
}
fn default_argocd_timeout() -> Duration {
    Duration::from_secs(600)
}
fn empty_map() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Default for ArgoCdConfig {
    fn default() -> Self {
        ArgoCdConfig {
            namespace: default_argocd_namespace(),
            timeout: default_argocd_timeout(),
            values: empty_map(),
            admin_password: None,
            chart: None,
            strict_values: false,
        }
    }
}

/// `tendril.apps`: the App of Apps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppsConfig {
    /// The apps repository (default: `config_snapshot.repositories.apps_destination_repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Git revision.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Path inside the repository (default: `config_snapshot.repositories.apps_path`, else `apps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Credentials for a private repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RepoCredentials>,
    /// Per component: `{enabled: false}` or extra values.
    #[serde(default)]
    pub components: BTreeMap<String, serde_json::Value>,
    /// Wait until the root Application and its children are Synced and Healthy.
    #[serde(default)]
    pub wait: bool,
}

fn default_revision() -> String {
    "main".to_string()
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            repo_url: None,
            revision: default_revision(),
            path: None,
            credentials: None,
            components: BTreeMap::new(),
            wait: false,
        }
    }
}

/// Credentials for the apps repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoCredentials {
    /// User name (for tokens, any non-empty name such as `git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// Token (used as the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretValue>,
}

/// A secret in a job file: a literal, `{env: NAME}` or `{file: PATH}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretValue {
    /// Read from an environment variable.
    Env {
        /// The variable's name.
        env: String,
    },
    /// Read from a file (trailing newline trimmed).
    File {
        /// The file (relative paths resolved against the job file).
        file: PathBuf,
    },
    /// Given literally.
    Literal(Secret<String>),
}

impl SecretValue {
    /// Reads the secret. `field` names the job field in errors.
    pub fn resolve(&self, field: &str) -> Result<Secret<String>, JobError> {
        match self {
            SecretValue::Literal(s) => Ok(s.clone()),
            SecretValue::Env { env } => std::env::var(env).map(Secret::new).map_err(|_| JobError::Secret {
                field: field.to_string(),
                problem: format!("environment variable {env} is not set (or not UTF-8); export it or give the value another way"),
            }),
            SecretValue::File { file } => std::fs::read_to_string(file)
                .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| JobError::Secret {
                    field: field.to_string(),
                    problem: format!("cannot read secret file {}: {e}", file.display()),
                }),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let SecretValue::File { file } = self {
            *file = absolutize(base, file);
        }
    }
}

/// `p` against `base`, with `.` and `..` resolved lexically so that messages
/// name `/srv/target/demo`, not `/srv/fixtures/jobs/../../target/demo`.
fn absolutize(base: &Path, p: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

mod duration_text {
    //! Durations as text: `10m`, `90s`, `1h 30m` (jiff's friendly format), or seconds as a number.
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => super::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Why [`parse_duration`] refused a text.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// The text is no duration.
    #[error("`{text}` is not a duration like 10m, 90s or 1h30m ({reason})")]
    Unreadable {
        /// The text.
        text: String,
        /// What the duration parser said.
        reason: jiff::Error,
    },
    /// The duration is negative.
    #[error("`{text}` is negative; give a positive duration like 10m")]
    Negative {
        /// The text.
        text: String,
    },
}

/// Parses a duration such as `10m`, `90s`, `1h30m` or `1h 30m` (the job
/// file's durations and the command line's duration flags).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let sd: jiff::SignedDuration =
        text.trim()
            .parse()
            .map_err(|reason| DurationError::Unreadable {
                text: text.to_string(),
                reason,
            })?;
    Duration::try_from(sd).map_err(|_| DurationError::Negative {
        text: text.to_string(),
    })
}

impl JobFile {
    /// Reads, parses and validates a job file (YAML or JSON). Relative paths
    /// in it are resolved against the file's own directory.
    pub fn load(path: &Path) -> Result<JobFile, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        Self::parse(&text, &base).map_err(|e| match e {
            JobError::Parse { message, .. } => JobError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates a job from YAML or JSON text; relative paths are
    /// resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<JobFile, JobError> {
        let mut job: JobFile = serde_saphyr::from_str(text).map_err(|e| JobError::Parse {
            path: PathBuf::from("<input>"),
            message: crate::errors::for_people(&e.to_string()),
        })?;
        job.resolve_paths(base);
        job.validate()?;
        Ok(job)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let t = &mut self.tendril;
        t.terraform.workdir = absolutize(base, &t.terraform.workdir);
        if let Some(bin) = &t.terraform.binary
            && bin.components().count() > 1
        {
            t.terraform.binary = Some(absolutize(base, bin));
        }
        match &mut t.terraform.backend {
            BackendConfig::Local { local } => local.path = absolutize(base, &local.path),
            BackendConfig::S3(s3) => {
                for v in [&mut s3.access_key_id, &mut s3.secret_access_key]
                    .into_iter()
                    .flatten()
                {
                    v.resolve_paths(base);
                }
            }
        }
        match &mut t.artifacts {
            ArtifactStoreConfig::Local { dir } => *dir = absolutize(base, dir),
            ArtifactStoreConfig::Supabase {
                service_key: Some(k),
                ..
            } => k.resolve_paths(base),
            _ => {}
        }
        if let Some(k) = &mut t.kubernetes.kubeconfig {
            *k = absolutize(base, k);
        }
        if let Some(c) = &mut t.argocd.chart {
            *c = absolutize(base, c);
        }
        if let Some(p) = &mut t.argocd.admin_password {
            p.resolve_paths(base);
        }
        if let Some(c) = &mut t.apps.credentials {
            for v in [&mut c.password, &mut c.token].into_iter().flatten() {
                v.resolve_paths(base);
            }
        }
    }

    /// Checks what serde cannot: cross-field rules and value formats.
    pub fn validate(&self) -> Result<(), JobError> {
        let job = &self.job;
        if job.id.0.trim().is_empty() {
            return Err(invalid("job.id", "is empty", "give the provision job's id"));
        }
        if job.job_type == JobType::Deploy && job.plan_job_id.is_none() {
            return Err(invalid(
                "job.plan_job_id",
                "is missing on a DEPLOY job",
                "name the PLAN job whose artifact this DEPLOY applies",
            ));
        }
        if !job.config_snapshot.is_object() {
            return Err(invalid(
                "job.config_snapshot",
                "is not a mapping",
                "give the vine's configuration as a mapping",
            ));
        }
        if let Some(h) = &job.config_hash {
            let hex = h.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "job.config_hash",
                    format!("`{h}` is not of the form sha256:<64 hex digits>"),
                    "remove it or give the hash the control plane computed",
                ));
            }
        }
        let vine = job.vine_config()?;
        if let CloudIdentity::Aws { role_arn, .. } = &self.cloud_identity {
            validate_role_arn(role_arn)?;
        }
        let identity = self.cloud_identity.provider();
        if identity.is_some() && identity != vine.provider {
            return Err(invalid(
                "cloud_identity.provider",
                format!(
                    "is {} but config_snapshot.provider is {}",
                    provider_name(identity),
                    provider_name(vine.provider)
                ),
                "give an identity for the vine's provider (or `local`)",
            ));
        }
        if let ArtifactStoreConfig::Supabase { url, .. } = &self.tendril.artifacts
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(
                "tendril.artifacts.url",
                format!("`{url}` is not an http(s) URL"),
                "give the Supabase project URL, e.g. https://<project>.supabase.co",
            ));
        }
        if !self.tendril.argocd.values.is_object() {
            return Err(invalid(
                "tendril.argocd.values",
                "is not a mapping",
                "give chart values as a mapping",
            ));
        }
        Ok(())
    }
}

/// Checks `cloud_identity.role_arn` with the one IAM role ARN rule
/// ([`crate::cloud::aws::RoleArn`]), so a bad ARN stops the job in preflight.
fn validate_role_arn(arn: &str) -> Result<(), JobError> {
    match arn.parse::<crate::cloud::aws::RoleArn>() {
        Ok(_) => Ok(()),
        Err(crate::cloud::CloudError::InvalidInput { reason, .. }) => Err(invalid(
            "cloud_identity.role_arn",
            reason,
            "give the ARN of the IAM role the job assumes",
        )),
        Err(other) => Err(invalid(
            "cloud_identity.role_arn",
            other.to_string(),
            "give the ARN of the IAM role the job assumes",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
job:
  id: j1
  job_type: DEPLOY
  vine_id: v1
  vineyard_id: vy1
  plan_job_id: p1
  config_snapshot: {project_name: shop, environment: prod, region: eu-west-1, provider: aws}
cloud_identity:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/GrapeProvisionerRole
  external_id: ext
"#;

    fn parse(text: &str) -> Result<JobFile, JobError> {
        JobFile::parse(text, Path::new("/base"))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let j = parse(MINIMAL).unwrap();
        let BackendConfig::S3(s3) = &j.tendril.terraform.backend else {
            panic!("default backend must be S3")
        };
        assert_eq!(s3.bucket, "vine-terraform-state");
        let vine = j.job.vine_config().unwrap();
        assert_eq!(
            s3.state_key("vy1", &vine),
            "vy1/shop/prod/eu-west-1/terraform.tfstate"
        );
        assert_eq!(j.tendril.argocd.namespace, "argocd");
        assert_eq!(j.tendril.argocd.timeout, Duration::from_secs(600));
        assert_eq!(j.tendril.apps.revision, "main");
        assert_eq!(j.tendril.terraform.workdir, Path::new("/base/."));
        assert!(!format!("{j:?}").contains("ext\""));
    }

    #[test]
    fn deploy_without_plan_job_is_rejected() {
        let text = MINIMAL.replace("  plan_job_id: p1\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("job.plan_job_id"), "{err}");
    }

    #[test]
    fn malformed_role_arn_names_the_field_and_the_fix() {
        let text = MINIMAL.replace("arn:aws:iam::123456789012:role/", "arn:aws:iam::12:role/");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("cloud_identity.role_arn"), "{err}");
        assert!(err.contains("12-digit account"), "{err}");
    }

    #[test]
    fn vine_provider_local_is_no_provider() {
        let local = MINIMAL.replace("provider: aws}", "provider: local}").replace(
            "cloud_identity:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/GrapeProvisionerRole\n  external_id: ext\n",
            "cloud_identity: {provider: local}\n",
        );
        let job = parse(&local).unwrap();
        assert_eq!(job.job.vine_config().unwrap().provider, None);
        let job = parse(MINIMAL).unwrap();
        assert_eq!(job.job.vine_config().unwrap().provider, Some(Provider::Aws));
        let err = parse(&MINIMAL.replace("provider: aws}", "provider: oracle}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown provider `oracle`, expected aws, gcp, azure or local"),
            "{err}"
        );
    }

    #[test]
    fn provider_mismatch_is_rejected() {
        let text = MINIMAL.replace("provider: aws}", "provider: gcp}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("cloud_identity.provider"), "{err}");
    }

    #[test]
    fn unknown_runner_fields_are_rejected() {
        let text = format!("{MINIMAL}tendril:\n  terraform: {{workdirr: x}}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("workdirr"), "{err}");
    }

    #[test]
    fn json_job_files_parse() {
        let text = r#"{"job": {"id": "j", "job_type": "PLAN", "vine_id": "v", "vineyard_id": "vy",
            "config_snapshot": {"project_name": "p", "environment": "e", "region": "r", "provider": "local"}},
            "cloud_identity": {"provider": "local"},
            "tendril": {"artifacts": {"store": "local", "dir": "a"}, "argocd": {"timeout": "90s"}}}"#;
        let j = parse(text).unwrap();
        assert_eq!(j.tendril.argocd.timeout, Duration::from_secs(90));
        let ArtifactStoreConfig::Local { dir } = &j.tendril.artifacts else {
            panic!()
        };
        assert_eq!(dir, Path::new("/base/a"));
    }

    #[test]
    fn secrets_resolve_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let text = format!(
            "{MINIMAL}tendril:\n  argocd: {{admin_password: {{file: pw}}}}\n  apps: {{credentials: {{username: git, token: {{env: TENDRIL_TEST_UNSET_VAR_X}}}}}}\n"
        );
        let j = JobFile::parse(&text, dir.path()).unwrap();
        let pw = j.tendril.argocd.admin_password.as_ref().unwrap();
        assert_eq!(
            pw.resolve("tendril.argocd.admin_password")
                .unwrap()
                .expose(),
            "from-file"
        );
        let tok = j
            .tendril
            .apps
            .credentials
            .as_ref()
            .unwrap()
            .token
            .as_ref()
            .unwrap();
        let err = tok
            .resolve("tendril.apps.credentials.token")
            .unwrap_err()
            .to_string();
        assert!(err.contains("TENDRIL_TEST_UNSET_VAR_X"), "{err}");
    }

    #[test]
    fn durations_parse_and_bad_ones_say_how() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("ten minutes")
                .unwrap_err()
                .to_string()
                .contains("`ten minutes` is not a duration like 10m")
        );
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Negative { .. })
        ));
    }
}
