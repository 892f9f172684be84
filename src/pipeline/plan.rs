//! The PLAN job: preflight, credentials, terraform init (tfvars from the
//! config snapshot), plan, read the plan, upload the artifact.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tendril::job::JobFile;
//! use tendril::pipeline::{JobEvent, plan::run_plan};
//! use tokio_util::sync::CancellationToken;
//!
//! let job = JobFile::load(std::path::Path::new("fixtures/jobs/demo-plan.yaml"))?;
//! let progress = |e: JobEvent| eprintln!("{e:?}");
//! let report = run_plan(&job, &progress, &CancellationToken::new()).await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

use tokio_util::sync::CancellationToken;

use super::phases::credentials;
use super::phases::preflight::{self, PreflightInput};
use super::phases::terraform::{self, InitInput, Initialized, Seed, TerraformPhaseError};
use super::report::{ArtifactInfo, ChangeReport};
use super::{JobEvent, JobRun, Phase, PhaseError, Progress, RunMode};
use crate::artifact::{self, ArtifactError};
use crate::cloud::ChildEnv;
use crate::confighash::ConfigHash;
use crate::job::{JobFile, JobType};
use crate::terraform::{ChangeSummary, PlanOptions, PlanOutcome};

/// The phases of a PLAN job, in order.
pub const PHASES: &[Phase] = &[
    Phase::Preflight,
    Phase::Credentials,
    Phase::TerraformInit,
    Phase::TerraformPlan,
    Phase::TerraformShow,
    Phase::Upload,
];

/// Runs a PLAN job. Never panics on bad input; the report says what failed.
#[tracing::instrument(name = "job", skip_all, fields(id = %job.job.id, job_type = "PLAN"))]
pub async fn run_plan(
    job: &JobFile,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> super::JobReport {
    let mut run = JobRun::start(
        &job.job.id.0,
        JobType::Plan,
        RunMode::Apply,
        progress,
        cancel,
    );
    let result = plan_phases(&mut run, job).await;
    run.finish(result, None)
}

async fn plan_phases(run: &mut JobRun<'_>, job: &JobFile) -> Result<(), PhaseError> {
    let (progress, cancel) = (run.progress(), run.cancel());
    let input = PreflightInput {
        job,
        mode: RunMode::Apply,
        kubeconfig: None,
        output_dir: None,
    };
    let checked = run
        .run(Phase::Preflight, async { preflight::check_plan(&input) })
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

    let planned = run
        .run(Phase::TerraformPlan, plan(&tf, progress, cancel))
        .await?;
    run.report()
        .warnings
        .extend(terraform::warnings_of(&planned.warnings));

    let summary = run.run(Phase::TerraformShow, show(&tf, cancel)).await?;
    run.report().change_summary = Some(ChangeReport {
        add: summary.add,
        change: summary.change,
        remove: summary.remove,
        applied: false,
        planned: Some(summary.clone()),
    });

    let stored = run
        .run(
            Phase::Upload,
            upload(Upload {
                job,
                config_hash: checked.config_hash,
                tf: &tf,
                summary: &summary,
                env: &creds.child_env,
            }),
        )
        .await?;
    run.report().artifact = Some(stored);
    Ok(())
}

/// The terraform_plan phase: `terraform plan -out` with the tfvars file.
async fn plan(
    tf: &Initialized,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<PlanOutcome, TerraformPhaseError> {
    let sink = |e: crate::terraform::Event| progress(JobEvent::Terraform(e));
    let opts = PlanOptions {
        out: tf.workspace.plan_file(),
        var_files: tf.tfvars.iter().cloned().collect(),
        ..Default::default()
    };
    Ok(tf.terraform.plan(&opts, &sink, cancel).await?)
}

/// The terraform_show phase: the saved plan's change summary.
async fn show(
    tf: &Initialized,
    cancel: &CancellationToken,
) -> Result<ChangeSummary, TerraformPhaseError> {
    Ok(tf
        .terraform
        .show_plan(&tf.workspace.plan_file(), cancel)
        .await?)
}

/// What the upload phase stores.
struct Upload<'a> {
    job: &'a JobFile,
    config_hash: ConfigHash,
    tf: &'a Initialized,
    summary: &'a ChangeSummary,
    env: &'a ChildEnv,
}

/// The upload phase: the plan file and its manifest into the artifact store.
async fn upload(u: Upload<'_>) -> Result<ArtifactInfo, ArtifactError> {
    let path = u.tf.workspace.plan_file();
    let plan = std::fs::read(&path).map_err(|source| ArtifactError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let manifest = artifact::PlanManifest::new(
        &u.job.job.id.0,
        u.config_hash,
        &plan,
        u.tf.terraform.version().to_string(),
        u.summary.clone(),
    );
    let store = super::phases::artifact_store(u.job, u.env)?;
    let location = store.upload(&u.job.job.id.0, &plan, &manifest).await?;
    Ok(ArtifactInfo {
        location,
        plan_sha256: manifest.plan_sha256,
        plan_size: manifest.plan_size,
    })
}
