//! The job types as phase lists, the phases they share, and the one report.
//!
//! Every job type is a straight list of phases of the same shape: a phase is
//! a function with typed input and output, run through [`JobRun::run`],
//! which times it, tells the progress sink, and wraps its error with the
//! phase. The first error ends the job; [`JobRun::finish`] turns what the
//! phases produced into the [`JobReport`].
//!
//! - [`plan`]: preflight, credentials, terraform init, plan, show, upload.
//! - [`deploy`]: preflight, credentials, artifact, config hash, terraform
//!   init, apply, outputs, kube client, Argo CD, App of Apps.
//! - [`destroy`]: preflight, credentials, terraform init, outputs, kube
//!   client, teardown, terraform destroy.
//!
//! The phases more than one job type runs live once, in [`phases`].

pub mod deploy;
pub mod destroy;
pub mod phases;
pub mod plan;
pub mod report;
pub mod result;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::job::JobType;
pub use report::{JobReport, JobStatus, RunMode};

/// One step of a job. Each job type runs a subsequence of these, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Check every input that can be checked before anything changes.
    Preflight,
    /// Assume cloud credentials.
    Credentials,
    /// Download the plan artifact and verify its digest (DEPLOY).
    Artifact,
    /// Compare the config hash with the plan's (DEPLOY).
    ConfigHash,
    /// Prepare the workspace and run `terraform init`.
    TerraformInit,
    /// `terraform plan` (PLAN).
    TerraformPlan,
    /// `terraform show -json` of the saved plan (PLAN).
    TerraformShow,
    /// Upload the plan artifact (PLAN).
    Upload,
    /// `terraform apply` of the saved plan (DEPLOY).
    TerraformApply,
    /// `terraform output`.
    Outputs,
    /// Build the Kubernetes client.
    KubeClient,
    /// Render, apply and wait for Argo CD (DEPLOY).
    #[serde(rename = "argocd")]
    ArgoCd,
    /// Render and apply the App of Apps (DEPLOY).
    AppOfApps,
    /// Delete what the cluster made outside terraform (DESTROY).
    Teardown,
    /// `terraform destroy` (DESTROY).
    TerraformDestroy,
    /// Say where the outputs went.
    Report,
}

impl Phase {
    /// The phase's name as shown to people and used as a key in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Credentials => "credentials",
            Phase::Artifact => "artifact",
            Phase::ConfigHash => "config_hash",
            Phase::TerraformInit => "terraform_init",
            Phase::TerraformPlan => "terraform_plan",
            Phase::TerraformShow => "terraform_show",
            Phase::Upload => "upload",
            Phase::TerraformApply => "terraform_apply",
            Phase::Outputs => "outputs",
            Phase::KubeClient => "kube_client",
            Phase::ArgoCd => "argocd",
            Phase::AppOfApps => "app_of_apps",
            Phase::Teardown => "teardown",
            Phase::TerraformDestroy => "terraform_destroy",
            Phase::Report => "report",
        }
    }

    /// A short description for progress output.
    pub fn title(self) -> &'static str {
        match self {
            Phase::Preflight => "check the job and the flags",
            Phase::Credentials => "assume cloud credentials",
            Phase::Artifact => "download the plan artifact",
            Phase::ConfigHash => "check the config hash",
            Phase::TerraformInit => "terraform init",
            Phase::TerraformPlan => "terraform plan",
            Phase::TerraformShow => "read the plan",
            Phase::Upload => "upload the plan artifact",
            Phase::TerraformApply => "terraform apply",
            Phase::Outputs => "read terraform outputs",
            Phase::KubeClient => "build the kube client",
            Phase::ArgoCd => "install Argo CD",
            Phase::AppOfApps => "apply the App of Apps",
            Phase::Teardown => "tear down what the cluster created",
            Phase::TerraformDestroy => "terraform destroy",
            Phase::Report => "report",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseOutcome {
    /// It finished.
    Ok,
    /// It failed; the job stopped here.
    Failed,
    /// It did not run (a dry run, or nothing needed doing).
    Skipped,
}

/// The timing of one phase.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseTiming {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub outcome: PhaseOutcome,
    /// Wall-clock time in milliseconds.
    pub millis: u64,
}

/// A phase starting or ending, as the progress sink sees it.
#[derive(Debug, Clone)]
pub enum PhaseEvent {
    /// A phase began.
    Started(Phase),
    /// A phase ended.
    Finished {
        /// Which phase.
        phase: Phase,
        /// How it ended.
        outcome: PhaseOutcome,
        /// How long it took.
        elapsed: Duration,
    },
}

/// Progress of a job of any type.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A phase started or ended.
    Phase(PhaseEvent),
    /// An event of terraform's JSON stream.
    Terraform(crate::terraform::Event),
    /// An apply-engine event (Argo CD or App of Apps).
    Apply(crate::apply::ApplyEvent),
    /// A teardown event (DESTROY).
    Teardown(crate::teardown::TeardownEvent),
    /// A note worth showing (a warning, a skipped step).
    Note(String),
}

/// Where a job's progress goes.
pub type Progress<'a> = &'a (dyn Fn(JobEvent) + Send + Sync);

/// What a [`PhaseError`] says before its cause: `phase NAME (TITLE) failed: `.
pub fn failed_prefix(phase: Phase) -> String {
    format!("phase {} ({}) failed: ", phase.name(), phase.title())
}

/// An error from a phase, wrapped with the phase's name.
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", failed_prefix(*phase))]
pub struct PhaseError {
    /// The phase that failed.
    pub phase: Phase,
    /// The module error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl PhaseError {
    /// Whether the phase stopped because the job was cancelled: a terraform
    /// command interrupted, or a phase that saw the cancellation itself.
    pub fn is_cancelled(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.source.as_ref());
        while let Some(e) = cause {
            if let Some(t) = e.downcast_ref::<crate::terraform::TerraformError>()
                && t.is_cancelled()
            {
                return true;
            }
            if e.downcast_ref::<Cancelled>().is_some() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// A phase that stopped because the job was cancelled.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// One running job: its stopwatch, its progress sink, its cancellation, and
/// the report its phases fill in.
pub struct JobRun<'a> {
    report: JobReport,
    progress: Progress<'a>,
    cancel: &'a CancellationToken,
}

impl<'a> JobRun<'a> {
    /// Starts the job `job_id` of `job_type`, run in `mode`.
    pub fn start(
        job_id: &str,
        job_type: JobType,
        mode: RunMode,
        progress: Progress<'a>,
        cancel: &'a CancellationToken,
    ) -> Self {
        JobRun {
            report: JobReport::new(job_id, job_type, mode),
            progress,
            cancel,
        }
    }

    /// The progress sink (for phases that forward terraform or apply events).
    pub fn progress(&self) -> Progress<'a> {
        self.progress
    }

    /// The job's cancellation.
    pub fn cancel(&self) -> &'a CancellationToken {
        self.cancel
    }

    /// The report so far.
    pub fn report(&mut self) -> &mut JobReport {
        &mut self.report
    }

    /// Runs one phase: times it, reports it, and wraps its error with the phase.
    pub async fn run<T, E, F>(&mut self, phase: Phase, work: F) -> Result<T, PhaseError>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        (self.progress)(JobEvent::Phase(PhaseEvent::Started(phase)));
        let start = Instant::now();
        let result =
            tracing::Instrument::instrument(work, tracing::info_span!("phase", %phase)).await;
        let outcome = if result.is_ok() {
            PhaseOutcome::Ok
        } else {
            PhaseOutcome::Failed
        };
        self.record(phase, outcome, start.elapsed());
        result.map_err(|e| PhaseError {
            phase,
            source: Box::new(e),
        })
    }

    /// Records a phase that did not run.
    pub fn skip(&mut self, phase: Phase) {
        self.record(phase, PhaseOutcome::Skipped, Duration::ZERO);
    }

    /// Shows a note (not a warning: the report does not keep it).
    pub fn note(&self, text: impl Into<String>) {
        (self.progress)(JobEvent::Note(text.into()));
    }

    /// Shows a warning and keeps it in the report.
    pub fn warn(&mut self, text: impl Into<String>) {
        let text = text.into();
        (self.progress)(JobEvent::Note(text.clone()));
        self.report.warnings.push(text);
    }

    fn record(&mut self, phase: Phase, outcome: PhaseOutcome, elapsed: Duration) {
        self.report.timings.push(PhaseTiming {
            phase,
            outcome,
            millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
        (self.progress)(JobEvent::Phase(PhaseEvent::Finished {
            phase,
            outcome,
            elapsed,
        }));
    }

    /// Ends the job: its status from `result`, the failure, and (with an
    /// output directory) `report.json` written there, mode 0600.
    pub fn finish(self, result: Result<(), PhaseError>, output_dir: Option<&Path>) -> JobReport {
        let mut report = self.report;
        match result {
            Ok(()) => report.status = JobStatus::Success,
            Err(e) => {
                report.status = if self.cancel.is_cancelled() || e.is_cancelled() {
                    JobStatus::Cancelled
                } else {
                    JobStatus::Failed
                };
                report.failed_phase = Some(e.phase);
                report.error = Some(crate::errors::chain_lines(&e));
                report.diagnostics = report::ObjectDiagnostic::of_error(&e);
            }
        }
        report.execution_metadata = report::execution_metadata(&report);
        if let Some(dir) = output_dir
            && let Err(e) = phases::output::write(
                dir,
                "report.json",
                &report.to_json(),
                crate::outfile::Mode::Secret,
            )
        {
            report.warnings.push(e.to_string());
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, thiserror::Error)]
    #[error("boom on {0}")]
    struct Boom(&'static str);

    #[tokio::test]
    async fn phases_are_timed_in_order_and_errors_name_the_phase() {
        let seen = Mutex::new(Vec::new());
        let sink = |e: JobEvent| seen.lock().unwrap().push(format!("{e:?}"));
        let cancel = CancellationToken::new();
        let mut run = JobRun::start("j1", JobType::Deploy, RunMode::Apply, &sink, &cancel);
        let v = run
            .run(Phase::Credentials, async { Ok::<_, Boom>(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
        run.skip(Phase::Artifact);
        let err = run
            .run(Phase::TerraformApply, async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<(), _>(Boom("aws_instance.web"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.phase, Phase::TerraformApply);
        assert_eq!(
            err.to_string(),
            "phase terraform_apply (terraform apply) failed: boom on aws_instance.web"
        );
        assert!(!err.is_cancelled());
        let report = run.finish(Err(err), None);
        assert_eq!(
            report
                .timings
                .iter()
                .map(|t| (t.phase, t.outcome))
                .collect::<Vec<_>>(),
            vec![
                (Phase::Credentials, PhaseOutcome::Ok),
                (Phase::Artifact, PhaseOutcome::Skipped),
                (Phase::TerraformApply, PhaseOutcome::Failed)
            ]
        );
        assert!(report.timings[2].millis >= 20);
        assert_eq!(report.status, JobStatus::Failed);
        assert_eq!(report.failed_phase, Some(Phase::TerraformApply));
        assert_eq!(seen.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_phase_that_saw_the_cancellation_ends_the_job_cancelled() {
        let sink = |_: JobEvent| {};
        let cancel = CancellationToken::new();
        let mut run = JobRun::start("j1", JobType::Destroy, RunMode::Apply, &sink, &cancel);
        let err = run
            .run(Phase::Teardown, async { Err::<(), _>(Cancelled) })
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(run.finish(Err(err), None).status, JobStatus::Cancelled);
    }
}
