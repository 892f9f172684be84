//! The preflight phase of every job type: everything that can be known
//! before anything changes, checked before anything irreversible happens.
//!
//! [`check_plan`], [`check_deploy`] and [`check_destroy`] take the job and
//! the run's settings ([`PreflightInput`]) and return what later phases use:
//! the job's parsed values ([`Checked`]: the vine, the config hash, the
//! checked kubeconfig, warnings) and, for DEPLOY, the resolved Argo CD and
//! App of Apps settings with the Argo CD chart rendered once
//! ([`DeployInputs`]). They fail, naming the input and the fix, on:
//! - a job of another type, or whose fields are wrong (id, snapshot,
//!   `config_hash`, `plan_job_id`, the terraform directory, the backend's
//!   keys, secrets given as `{env: …}` / `{file: …}`);
//! - (DEPLOY) an unknown App of Apps component or setting (`vaules:`); an
//!   Argo CD chart that does not load, or does not render with the job's
//!   values (a `required` value missing, a template error);
//! - a kubeconfig that cannot be read, lacks the context, skips TLS
//!   verification, has a CA that is no X.509 certificate, or would send a
//!   credential over `http://`;
//! - an output directory that cannot be created or written;
//! - (DEPLOY) a cloud identity `local` with no kubeconfig in a run that
//!   needs a cluster.
//!
//! What cannot exist yet (the cluster terraform is about to create, its
//! outputs) is checked by the phases after terraform. The plan artifact's
//! presence and digest are checked by the `artifact` phase, which needs the
//! cloud credentials for some stores and still runs before `terraform init`.
//!
//! The Argo CD render here uses the placeholder `[redacted]` for the Redis
//! password: the real one is read back from the cluster (so that a re-deploy
//! never rotates it) in the `argocd` phase.

use std::path::{Path, PathBuf};

use crate::appofapps::{self, AppOfApps, AppsSource, RepoCredentials};
use crate::argocd::{self, ArgoCdError, ArgoCdSpec};
use crate::chart::{self, ChartError};
use crate::cloud::Provider;
use crate::confighash::ConfigHash;
use crate::facts::{ClusterFacts, InfraFacts};
use crate::job::{BackendConfig, CloudIdentity, JobError, JobFile, JobType, VineConfig};
use crate::kubeconfig::{self, KubeconfigError};
use crate::pipeline::RunMode;

/// What the written `argocd.yaml` (and this render) carries instead of the
/// Redis password.
pub const REDACTED_PLACEHOLDER: &str = argocd::REDIS_PASSWORD_PLACEHOLDER;

/// The manifest sources of the App of Apps that exist only with an apps
/// repository (the root Application and its repository Secret).
pub const ROOT_SOURCES: &[&str] = &["templates/root.yaml", "templates/repository.yaml"];

/// A kubeconfig file and context given for the run (flag or job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigRef {
    /// The file.
    pub path: PathBuf,
    /// The context in it (default: its current context).
    pub context: Option<String>,
}

/// What the preflight checks.
#[derive(Debug, Clone, Copy)]
pub struct PreflightInput<'a> {
    /// The job.
    pub job: &'a JobFile,
    /// How the run treats terraform and the cluster.
    pub mode: RunMode,
    /// A kubeconfig given by flag (wins over the job's `tendril.kubernetes`).
    pub kubeconfig: Option<&'a KubeconfigRef>,
    /// Where outputs go, if anywhere.
    pub output_dir: Option<&'a Path>,
}

/// The job's values, parsed and checked once, for every later phase.
#[derive(Debug)]
pub struct Checked {
    /// The vine, from `config_snapshot`.
    pub vine: VineConfig,
    /// The hash of `config_snapshot` (equal to `job.config_hash` when given).
    pub config_hash: ConfigHash,
    /// The kubeconfig to use, checked.
    pub kubeconfig: Option<KubeconfigRef>,
    /// Things worth telling (not failures).
    pub warnings: Vec<String>,
}

/// What only a DEPLOY needs, resolved by its preflight.
#[derive(Debug)]
pub struct DeployInputs {
    /// `tendril.argocd`, resolved (the admin password read).
    pub argocd: ArgoCdSpec,
    /// The Argo CD chart rendered once with the job's values and the
    /// placeholder Redis password (what `argocd.yaml` holds; the install
    /// reuses it).
    pub argocd_render: argocd::Rendered,
    /// `tendril.apps`, resolved (credentials read, components checked).
    pub apps: AppOfApps,
    /// Whether the App of Apps gets its root Application (an apps
    /// repository is configured).
    pub root_application: bool,
}

/// Why the preflight refused the job.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A job field is wrong.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The kubeconfig cannot be used.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The Argo CD chart does not load or render.
    #[error("{input}: {source}; {fix}")]
    Chart {
        /// The job field to look at.
        input: &'static str,
        /// The chart error.
        source: ChartError,
        /// What to do.
        fix: &'static str,
    },
    /// An App of Apps setting is wrong.
    #[error("{0}")]
    Apps(#[from] appofapps::AppOfAppsError),
    /// The output directory cannot be used.
    #[error("output directory {path}: {problem}; {fix}")]
    OutputDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: &'static str,
    },
    /// The run needs a cluster and nothing says how to reach one.
    #[error(
        "cloud identity `local` gives no cluster credentials and no kubeconfig was given; give one (tendril.kubernetes.kubeconfig in the job, or --kubeconfig), or run with --dry-run (plan only, changes nothing) or --no-cluster (apply terraform, write the manifests, leave any cluster alone)"
    )]
    NoCluster,
}

fn invalid(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> JobError {
    JobError::Invalid {
        field: field.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The preflight of a PLAN job: the job's own fields.
pub fn check_plan(input: &PreflightInput<'_>) -> Result<Checked, PreflightError> {
    check_common(input, JobType::Plan)
}

/// The preflight of a DEPLOY job: the job's fields, the plan it names, the
/// Argo CD and App of Apps settings (the chart rendered once), the way to
/// the cluster.
pub fn check_deploy(input: &PreflightInput<'_>) -> Result<(Checked, DeployInputs), PreflightError> {
    let job = input.job;
    let mut checked = check_common(input, JobType::Deploy)?;
    check_plan_job(job)?;
    let argocd = argocd_spec(job)?;
    let (apps, root_application) = app_of_apps_spec(job, &checked.vine, &argocd.namespace)?;
    check_components(&checked.vine, &apps)?;
    if !root_application {
        checked.warnings.push(
            "no apps repository (tendril.apps.repo_url or config_snapshot.repositories.apps_destination_repo): Argo CD and the platform components are installed, the root Application is left out; set one to sync the vine's apps".to_string(),
        );
        if job.tendril.apps.credentials.is_some() {
            checked.warnings.push(
                "tendril.apps.credentials is set but there is no apps repository: the repository Secret is left out".to_string(),
            );
        }
    }
    let argocd_render = argocd::render(&argocd).map_err(|e| chart_failure(&argocd, e))?;
    // values the chart does not act on (an error with tendril.argocd.strict_values)
    checked.warnings.extend(
        argocd_render
            .warnings()
            .iter()
            .map(|w| format!("tendril.argocd.values: {w}")),
    );
    if matches!(job.cloud_identity, CloudIdentity::Local)
        && checked.kubeconfig.is_none()
        && input.mode == RunMode::Apply
    {
        return Err(PreflightError::NoCluster);
    }
    Ok((
        checked,
        DeployInputs {
            argocd,
            argocd_render,
            apps,
            root_application,
        },
    ))
}

/// The preflight of a DESTROY job: the job's own fields and the way to the
/// cluster (a cluster that cannot be reached later is skipped, not an error).
pub fn check_destroy(input: &PreflightInput<'_>) -> Result<Checked, PreflightError> {
    let checked = check_common(input, JobType::Destroy)?;
    argocd_spec(input.job)?;
    Ok(checked)
}

/// What every job type checks: type, id, snapshot, hash, terraform
/// directory, backend keys, kubeconfig, output directory.
fn check_common(input: &PreflightInput<'_>, expected: JobType) -> Result<Checked, PreflightError> {
    let job = input.job;
    if job.job.job_type != expected {
        let command = |t: JobType| match t {
            JobType::Plan => "tendril plan",
            JobType::Deploy => "tendril deploy",
            JobType::Destroy => "tendril destroy",
        };
        let given = job.job.job_type;
        return Err(invalid(
            "job.job_type",
            format!(
                "is {given} but `{}` runs {expected} jobs",
                command(expected)
            ),
            format!("run {given} jobs with `{}`", command(given)),
        )
        .into());
    }
    crate::artifact::check_job_id(&job.job.id.0).map_err(|e| {
        invalid(
            "job.id",
            e.to_string(),
            "give the job's id as the control plane sent it",
        )
    })?;
    let vine = job.job.vine_config()?;
    let config_hash = ConfigHash::of(&job.job.config_snapshot);
    if let Some(given) = &job.job.config_hash
        && given.parse::<ConfigHash>().ok() != Some(config_hash)
    {
        return Err(invalid(
            "job.config_hash",
            format!("is {given} but config_snapshot hashes to {config_hash}"),
            "the control plane and tendril disagree on the configuration: queue the job again",
        )
        .into());
    }
    let workdir = &job.tendril.terraform.workdir;
    if !workdir.is_dir() {
        return Err(invalid(
            "tendril.terraform.workdir",
            format!("{} is not a directory", workdir.display()),
            "give the directory of the vine's terraform configuration",
        )
        .into());
    }
    if let BackendConfig::S3(s3) = &job.tendril.terraform.backend {
        match (&s3.access_key_id, &s3.secret_access_key) {
            (Some(id), Some(secret)) => {
                id.resolve("tendril.terraform.backend.access_key_id")?;
                secret.resolve("tendril.terraform.backend.secret_access_key")?;
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "tendril.terraform.backend",
                    "has only one of access_key_id and secret_access_key",
                    "give both, or neither to use the cloud identity's credentials",
                )
                .into());
            }
        }
    }
    let kubeconfig = input.kubeconfig.cloned().or_else(|| {
        job.tendril
            .kubernetes
            .kubeconfig
            .clone()
            .map(|path| KubeconfigRef {
                path,
                context: job.tendril.kubernetes.context.clone(),
            })
    });
    if let Some(k) = &kubeconfig {
        let parsed = kubeconfig::read_kubeconfig(&k.path)?;
        kubeconfig::check_kubeconfig(&parsed, k.context.as_deref(), &k.path)?;
    }
    if let Some(dir) = input.output_dir {
        check_output_dir(dir)?;
    }
    Ok(Checked {
        vine,
        config_hash,
        kubeconfig,
        warnings: Vec::new(),
    })
}

/// A DEPLOY's `plan_job_id`: present, not its own id, a valid id.
fn check_plan_job(job: &JobFile) -> Result<(), PreflightError> {
    let plan_job = job.job.plan_job_id.as_ref().ok_or_else(|| {
        invalid(
            "job.plan_job_id",
            "is missing",
            "name the PLAN job whose artifact to apply",
        )
    })?;
    if plan_job == &job.job.id {
        return Err(invalid(
            "job.plan_job_id",
            format!("is this DEPLOY job's own id `{}`", plan_job),
            "name the PLAN job whose artifact to apply",
        )
        .into());
    }
    crate::artifact::check_job_id(&plan_job.0).map_err(|e| {
        invalid(
            "job.plan_job_id",
            e.to_string(),
            "give the PLAN job's id as the control plane sent it",
        )
    })?;
    Ok(())
}

/// `tendril.argocd`, with the preset admin password read.
pub fn argocd_spec(job: &JobFile) -> Result<ArgoCdSpec, JobError> {
    let a = &job.tendril.argocd;
    let admin_password = match &a.admin_password {
        Some(v) => Some(v.resolve("tendril.argocd.admin_password")?),
        None => None,
    };
    Ok(ArgoCdSpec {
        namespace: a.namespace.clone(),
        values: a.values.clone(),
        admin_password,
        timeout: a.timeout,
        chart: a.chart.clone(),
        strict_values: a.strict_values,
    })
}

/// The repository URL the root Application gets when the job names none; it
/// never reaches a manifest (root and repository Secret are left out).
const NO_REPOSITORY: &str = "https://no-apps-repository.invalid/";

/// `tendril.apps` resolved, and whether an apps repository is configured.
fn app_of_apps_spec(
    job: &JobFile,
    vine: &VineConfig,
    namespace: &str,
) -> Result<(AppOfApps, bool), JobError> {
    let apps = &job.tendril.apps;
    let repos = vine.repositories.clone();
    let repo_url = apps
        .repo_url
        .clone()
        .or_else(|| repos.as_ref().and_then(|r| r.apps_destination_repo.clone()))
        .filter(|u| !u.trim().is_empty());
    let path = apps
        .path
        .clone()
        .or_else(|| repos.as_ref().and_then(|r| r.apps_path.clone()))
        .unwrap_or_else(|| "apps".to_string());
    let credentials = match &apps.credentials {
        Some(c) => {
            let secret = match (&c.token, &c.password) {
                (Some(t), _) => t.resolve("tendril.apps.credentials.token")?,
                (None, Some(p)) => p.resolve("tendril.apps.credentials.password")?,
                (None, None) => {
                    return Err(invalid(
                        "tendril.apps.credentials",
                        "has neither password nor token",
                        "give `token` (or `password`) for the apps repository",
                    ));
                }
            };
            Some(RepoCredentials {
                username: c.username.clone().unwrap_or_else(|| "git".to_string()),
                password: secret,
            })
        }
        None => None,
    };
    let has_repo = repo_url.is_some();
    Ok((
        AppOfApps {
            namespace: namespace.to_string(),
            apps: AppsSource {
                repo_url: repo_url.unwrap_or_else(|| NO_REPOSITORY.to_string()),
                revision: apps.revision.clone(),
                path,
                credentials,
            },
            components: apps.components.clone(),
        },
        has_repo,
    ))
}

/// Checks component names, keys and types with the App of Apps' own rules
/// (facts do not matter for them: placeholder facts stand in).
fn check_components(vine: &VineConfig, apps: &AppOfApps) -> Result<(), PreflightError> {
    let provider = vine.provider.unwrap_or(Provider::Aws);
    let placeholder = InfraFacts {
        cluster: ClusterFacts {
            provider,
            name: "preflight".to_string(),
            endpoint: None,
            id: None,
            ca: None,
            region: None,
            sources: Default::default(),
        },
        network: None,
        databases: Vec::new(),
        caches: Vec::new(),
        dns: None,
    };
    appofapps::values(&placeholder, apps)?;
    Ok(())
}

/// Names the job field to fix for a chart that does not load or render.
fn chart_failure(spec: &ArgoCdSpec, e: ArgoCdError) -> PreflightError {
    let source = match e {
        ArgoCdError::Chart(c) => c,
        other => ChartError::Invalid {
            chart: "argocd".to_string(),
            reason: other.to_string(),
        },
    };
    let loading = matches!(
        source,
        ChartError::Io { .. }
            | ChartError::Archive { .. }
            | ChartError::Invalid { .. }
            | ChartError::NoEmbedded { .. }
    );
    if loading && spec.chart.is_some() {
        PreflightError::Chart {
            input: "job field `tendril.argocd.chart`",
            source,
            fix: "give a chart directory or .tgz archive, or remove the field to use the embedded Argo CD chart",
        }
    } else {
        PreflightError::Chart {
            input: "job field `tendril.argocd.values`",
            source,
            fix: "fix the values the chart reports (see docs/argocd-chart.md)",
        }
    }
}

/// Creates the output directory (and its parents) and checks that a file
/// can be created in it.
fn check_output_dir(dir: &Path) -> Result<(), PreflightError> {
    let fail = |problem: String| PreflightError::OutputDir {
        path: dir.to_path_buf(),
        problem,
        fix: "choose a directory that can be created and written (every parent must be a directory)",
    };
    if let Some(blocker) = dir.ancestors().find(|a| a.is_file()) {
        return Err(fail(format!(
            "{} is a file, not a directory",
            blocker.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot be created ({e})")))?;
    tempfile::tempfile_in(dir).map_err(|e| fail(format!("cannot be written ({e})")))?;
    Ok(())
}

/// Drops the root Application and its repository Secret from a rendered App
/// of Apps (a job without an apps repository).
pub fn without_root(manifests: Vec<chart::RenderedManifest>) -> Vec<chart::RenderedManifest> {
    manifests
        .into_iter()
        .filter(|m| !ROOT_SOURCES.iter().any(|s| m.source.ends_with(s)))
        .collect()
}
