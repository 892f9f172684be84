//! The phase sequence, phase timing, the report.
//!
//! A job is a straight line of phases; each phase is timed and named in
//! progress output and in errors. [`plan`] runs a PLAN job, [`deploy`] a
//! DEPLOY job. [`Phases`] is the stopwatch both use: it runs one phase,
//! records its duration and outcome, and tells the progress sink.

pub mod credentials;
pub mod deploy;
pub mod plan;
pub mod planned;
pub mod preflight;
pub mod result;

use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// One step of a job, in the order a DEPLOY job runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Check every input that can be checked before terraform runs.
    Preflight,
    /// Assume cloud credentials.
    Credentials,
    /// Download the plan artifact and verify its digest.
    Artifact,
    /// Compare the config hash with the plan's.
    ConfigHash,
    /// `terraform init`.
    TerraformInit,
    /// `terraform plan` (PLAN jobs).
    TerraformPlan,
    /// Upload the plan artifact (PLAN jobs).
    Upload,
    /// `terraform apply` of the saved plan.
    TerraformApply,
    /// `terraform output`.
    Outputs,
    /// Build the Kubernetes client.
    KubeClient,
    /// Render, apply and wait for Argo CD.
    #[serde(rename = "argocd")]
    ArgoCd,
    /// Render and apply the App of Apps.
    AppOfApps,
    /// Assemble the report.
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
            Phase::Upload => "upload",
            Phase::TerraformApply => "terraform_apply",
            Phase::Outputs => "outputs",
            Phase::KubeClient => "kube_client",
            Phase::ArgoCd => "argocd",
            Phase::AppOfApps => "app_of_apps",
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
            Phase::Upload => "upload the plan artifact",
            Phase::TerraformApply => "terraform apply",
            Phase::Outputs => "read terraform outputs",
            Phase::KubeClient => "build the kube client",
            Phase::ArgoCd => "install Argo CD",
            Phase::AppOfApps => "apply the App of Apps",
            Phase::Report => "report",
        }
    }
}

/// What a [`PhaseError`] says before its cause: `phase NAME (TITLE) failed: `.
pub fn failed_prefix(phase: Phase) -> String {
    format!("phase {} ({}) failed: ", phase.name(), phase.title())
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseOutcome {
    /// It finished.
    Ok,
    /// It failed; the job stopped here.
    Failed,
    /// It was skipped (e.g. by `--dry-run` or because nothing needed doing).
    Skipped,
}

/// The timing of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTiming {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub outcome: PhaseOutcome,
    /// Wall-clock time in milliseconds.
    pub millis: u64,
}

/// What a phase reports to the progress sink.
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

/// The stopwatch of a job: runs phases in order and records their timings.
pub struct Phases<'a> {
    timings: Vec<PhaseTiming>,
    sink: &'a (dyn Fn(PhaseEvent) + Send + Sync),
}

impl<'a> Phases<'a> {
    /// A stopwatch that tells `sink` when each phase starts and ends.
    pub fn new(sink: &'a (dyn Fn(PhaseEvent) + Send + Sync)) -> Self {
        Phases {
            timings: Vec::new(),
            sink,
        }
    }

    /// Runs one phase: times it, reports it, and wraps its error with the phase.
    pub async fn run<T, E, F>(&mut self, phase: Phase, work: F) -> Result<T, PhaseError>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        (self.sink)(PhaseEvent::Started(phase));
        let start = Instant::now();
        let result =
            tracing::Instrument::instrument(work, tracing::info_span!("phase", %phase)).await;
        let elapsed = start.elapsed();
        let outcome = if result.is_ok() {
            PhaseOutcome::Ok
        } else {
            PhaseOutcome::Failed
        };
        self.record(phase, outcome, elapsed);
        result.map_err(|e| PhaseError {
            phase,
            source: Box::new(e),
        })
    }

    /// Records a phase that did not run.
    pub fn skip(&mut self, phase: Phase) {
        self.record(phase, PhaseOutcome::Skipped, Duration::ZERO);
    }

    fn record(&mut self, phase: Phase, outcome: PhaseOutcome, elapsed: Duration) {
        self.timings.push(PhaseTiming {
            phase,
            outcome,
            millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
        (self.sink)(PhaseEvent::Finished {
            phase,
            outcome,
            elapsed,
        });
    }

    /// The timings recorded so far, in order.
    pub fn timings(&self) -> &[PhaseTiming] {
        &self.timings
    }

    /// Takes the timings out.
    pub fn into_timings(self) -> Vec<PhaseTiming> {
        self.timings
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
        let sink = |e: PhaseEvent| seen.lock().unwrap().push(format!("{e:?}"));
        let mut phases = Phases::new(&sink);
        let v = phases
            .run(Phase::Credentials, async { Ok::<_, Boom>(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
        phases.skip(Phase::Artifact);
        let err = phases
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
        let t = phases.timings();
        assert_eq!(
            t.iter().map(|t| (t.phase, t.outcome)).collect::<Vec<_>>(),
            vec![
                (Phase::Credentials, PhaseOutcome::Ok),
                (Phase::Artifact, PhaseOutcome::Skipped),
                (Phase::TerraformApply, PhaseOutcome::Failed)
            ]
        );
        assert!(t[2].millis >= 20);
        assert_eq!(seen.lock().unwrap().len(), 5);
    }
}
