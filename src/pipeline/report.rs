//! The report every job type ends with: one shape, one status vocabulary
//! (the control plane's `SUCCESS` / `FAILED` / `CANCELLED`), the same
//! timings and the same failure fields. Sections a job type does not produce
//! are `null` (or empty). Its JSON Schema is `docs/report.schema.json`,
//! generated from these types ([`schema`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Phase, PhaseError, PhaseTiming};
use crate::Secret;
use crate::facts::InfraFacts;
pub use crate::job::JobStatus;
use crate::job::JobType;
use crate::teardown::TeardownReport;
use crate::terraform::{ChangeSummary, Outputs};

/// How a run treats terraform and the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Change what the job type changes.
    Apply,
    /// Change nothing anywhere: show the plan, render from its known
    /// outputs, and dry-run on the server when a cluster is given (DEPLOY).
    DryRun,
    /// Run terraform and write the manifests; leave any cluster alone.
    NoCluster,
}

/// What terraform changed (or, in a PLAN or a dry run, will change).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChangeReport {
    /// Resources created.
    pub add: u64,
    /// Resources changed in place.
    pub change: u64,
    /// Resources destroyed.
    pub remove: u64,
    /// Whether the changes were made (false for a PLAN and a dry run).
    pub applied: bool,
    /// The plan's summary, with resource addresses (PLAN, DEPLOY).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<ChangeSummary>,
}

/// Where a PLAN job's artifact went.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactInfo {
    /// The store's location of the artifact.
    pub location: String,
    /// sha256 of the plan file.
    pub plan_sha256: String,
    /// Size of the plan file in bytes.
    pub plan_size: u64,
}

/// The cluster, as the report shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

impl ClusterSummary {
    /// The summary of the facts' cluster.
    pub fn of(facts: &InfraFacts) -> ClusterSummary {
        ClusterSummary {
            name: facts.cluster.name.clone(),
            endpoint: facts.cluster.endpoint.as_ref().map(|e| e.to_string()),
            arn: facts.cluster.id.clone(),
            region: facts.cluster.region.clone(),
            provider: facts.cluster.provider.as_str().to_string(),
        }
    }
}

/// Argo CD, as the report shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ArgoCdSummary {
    /// The URL; empty when nothing was installed.
    pub url: String,
    /// Why the URL is only reachable in-cluster, or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The admin password; `null` when not retrievable or not read.
    #[schemars(with = "Option<String>")]
    pub admin_password: Option<Secret<String>>,
    /// Namespace.
    pub namespace: String,
    /// Objects per action (`created`, `configured`, `unchanged`, …).
    pub objects: BTreeMap<String, usize>,
}

/// One object that failed or did not become ready, as the report shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ObjectDiagnostic {
    /// `Kind namespace/name`.
    pub object: String,
    /// The manifest it came from.
    pub source: String,
    /// `failed` or `not_ready`.
    pub state: String,
    /// Why.
    pub reason: String,
    /// What the cluster said (conditions, events, pod states).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ObjectDiagnostic {
    /// Every object that failed or was not ready, when the phase error
    /// carries the apply engine's per-object report.
    pub fn of_error(e: &PhaseError) -> Vec<ObjectDiagnostic> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.source.as_ref());
        while let Some(err) = cause {
            if let Some(a) = err.downcast_ref::<crate::apply::ApplyError>()
                && let Some(r) = a.report()
            {
                return Self::of_apply(r);
            }
            cause = err.source();
        }
        Vec::new()
    }

    fn of_apply(report: &crate::apply::ApplyReport) -> Vec<ObjectDiagnostic> {
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
                    state: state.to_string(),
                    reason,
                    details: o.diagnostics.clone(),
                })
            })
            .collect()
    }
}

/// The report of a job of any type (JSON with `--output json`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// The job; empty when the job file could not be read.
    pub job_id: String,
    /// PLAN, DEPLOY or DESTROY.
    pub job_type: JobType,
    /// SUCCESS, FAILED or CANCELLED.
    pub status: JobStatus,
    /// `apply`, `dry_run` or `no_cluster`.
    pub mode: RunMode,
    /// The phase that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<Phase>,
    /// What went wrong, with its causes, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The config hash of the job's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The PLAN job whose plan a DEPLOY applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_job_id: Option<String>,
    /// The terraform version that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terraform_version: Option<String>,
    /// What terraform changed or will change.
    pub change_summary: Option<ChangeReport>,
    /// The stored plan artifact (PLAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactInfo>,
    /// The cluster (DEPLOY, DESTROY).
    pub cluster: Option<ClusterSummary>,
    /// Argo CD (DEPLOY).
    pub argocd: Option<ArgoCdSummary>,
    /// What the teardown deleted and what remains (DESTROY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<TeardownReport>,
    /// Terraform outputs (sensitive ones `[redacted]` unless asked).
    pub outputs: Value,
    /// Infrastructure facts (DEPLOY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Value>,
    /// Phase timings in milliseconds, in order.
    pub timings: Vec<PhaseTiming>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// When applying or waiting failed: every object that failed or was not
    /// ready, with its reason and what the cluster said about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<ObjectDiagnostic>,
    /// The object the Trellis worker API stores (see `docs/report.md`).
    pub execution_metadata: Value,
}

impl JobReport {
    /// A FAILED report of `job_id` that nothing has been added to yet.
    pub fn new(job_id: &str, job_type: JobType, mode: RunMode) -> JobReport {
        JobReport {
            job_id: job_id.to_string(),
            job_type,
            status: JobStatus::Failed,
            mode,
            failed_phase: None,
            error: None,
            config_hash: None,
            plan_job_id: None,
            terraform_version: None,
            change_summary: None,
            artifact: None,
            cluster: None,
            argocd: None,
            teardown: None,
            outputs: json!({}),
            facts: None,
            timings: Vec::new(),
            warnings: Vec::new(),
            diagnostics: Vec::new(),
            execution_metadata: json!({}),
        }
    }

    /// The report of a job whose file could not be read or parsed: FAILED in
    /// `preflight`, with the error; `job_id` is empty (the file gave none).
    pub fn unreadable_job(
        error: &crate::job::JobError,
        job_type: JobType,
        mode: RunMode,
    ) -> JobReport {
        let mut report = JobReport::new("", job_type, mode);
        report.failed_phase = Some(Phase::Preflight);
        report.error = Some(crate::errors::chain_lines(error));
        report.execution_metadata = execution_metadata(&report);
        report
    }

    /// Whether this was a dry run (nothing changed anywhere).
    pub fn is_dry_run(&self) -> bool {
        self.mode == RunMode::DryRun
    }

    /// Timings as `{phase: millis}`.
    pub fn timings_ms(&self) -> BTreeMap<&'static str, u64> {
        self.timings
            .iter()
            .map(|t| (t.phase.name(), t.millis))
            .collect()
    }

    /// The error without the `phase NAME (TITLE) failed: ` prefix (the phase
    /// is in `failed_phase`).
    pub fn error_without_phase(&self) -> Option<String> {
        let e = self.error.as_deref()?;
        Some(match self.failed_phase {
            Some(p) => e
                .strip_prefix(&super::failed_prefix(p))
                .unwrap_or(e)
                .to_string(),
            None => e.to_string(),
        })
    }

    /// Sets the outputs as the report shows them: sensitive values
    /// `[redacted]` unless `include_sensitive`.
    pub fn set_outputs(&mut self, outputs: &Outputs, include_sensitive: bool) {
        self.outputs = if include_sensitive {
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
    }

    /// Sets the cluster and the facts; with `outputs`, every string equal to
    /// a sensitive output's value is `[redacted]` in the facts.
    pub fn set_facts(&mut self, facts: &InfraFacts, redact_from: Option<&Outputs>) {
        self.cluster = Some(ClusterSummary::of(facts));
        let mut shown = serde_json::to_value(facts).ok();
        if let (Some(v), Some(outputs)) = (shown.as_mut(), redact_from) {
            redact_sensitive(v, &sensitive_strings(outputs));
        }
        self.facts = shown;
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// The `execution_metadata` object of a report, in the shape the Trellis
/// worker API stores (see `docs/report.md`): built from the report's own
/// (already redacted) fields.
pub fn execution_metadata(report: &JobReport) -> Value {
    let facts = report.facts.as_ref();
    let databases: Vec<Value> = list(facts, "databases")
        .iter()
        .map(|d| {
            json!({
                "name": d.get("name"),
                "writer_endpoint": d.get("writer_endpoint"),
                "reader_endpoint": d.get("reader_endpoint"),
                "credentials_secret_arn": d.get("credentials_secret"),
            })
        })
        .collect();
    let caches: Vec<Value> = list(facts, "caches")
        .iter()
        .map(|c| {
            json!({
                "name": c.get("name"),
                "primary_endpoint": c.get("primary_endpoint"),
                "reader_endpoint": c.get("reader_endpoint"),
            })
        })
        .collect();
    json!({
        "cluster_name": report.cluster.as_ref().map(|c| c.name.clone()),
        "cluster_endpoint": report.cluster.as_ref().and_then(|c| c.endpoint.clone()),
        "cluster_arn": report.cluster.as_ref().and_then(|c| c.arn.clone()),
        "argocd_url": report.argocd.as_ref().map(|a| a.url.clone()),
        "argocd_admin_password": report.argocd.as_ref().and_then(|a| a.admin_password.as_ref().map(|p| p.expose().clone())),
        "databases": databases,
        "caches": caches,
        "outputs": report.outputs,
        "change_summary": report.change_summary.as_ref().map(|c| json!({"add": c.add, "change": c.change, "remove": c.remove})),
        "timings_ms": report.timings_ms(),
    })
}

fn list<'a>(facts: Option<&'a Value>, key: &str) -> &'a [Value] {
    facts
        .and_then(|f| f.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
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

/// The JSON Schema of [`JobReport`] (what `docs/report.schema.json` holds).
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(JobReport)).unwrap_or(Value::Null)
}
