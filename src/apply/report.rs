//! Per-object results, the report and progress events.

use super::{ObjectError, ObjectRef};
use std::fmt::Write as _;
use std::time::Duration;

/// What applying did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The object did not exist and was created.
    Created,
    /// The object existed and was applied: its resourceVersion moved, or
    /// (without an inventory) tendril cannot tell whether anything changed.
    Configured,
    /// The object existed and the apply changed nothing (same resourceVersion
    /// as before; with an inventory, an unchanged object is not even sent; in
    /// a dry run: the server's result equals the live object).
    Unchanged,
    /// The object was deleted and created again after an immutable-field rejection.
    Recreated,
    /// Applying failed.
    Failed,
    /// Not applied because something it waits for failed or was not ready.
    Skipped,
    /// A member of the previous apply set that the bundle no longer holds: deleted.
    Pruned,
}

impl Action {
    /// Lower-case name, as shown in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Recreated => "recreated",
            Action::Failed => "failed",
            Action::Skipped => "skipped",
            Action::Pruned => "pruned",
        }
    }
}

/// Readiness as reported for an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Status {
    /// Not waited for (no `--wait`, a dry run, or not applied).
    NotChecked,
    /// Ready.
    Ready,
    /// Not ready when waiting stopped, and why.
    NotReady(String),
    /// Failed, and why.
    Failed(String),
}

/// Fields another field manager owns that this apply would set differently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldConflict {
    /// The other field manager.
    pub manager: String,
    /// The fields (`.spec.replicas`, ...).
    pub fields: Vec<String>,
}

/// What happened to one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectResult {
    /// The object.
    pub object: ObjectRef,
    /// Where it came from.
    pub source: String,
    /// The wave it was applied in (0-based).
    pub wave: usize,
    /// What applying did.
    pub action: Action,
    /// Why applying failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
    /// Conflicts: on failure, who owns what; in a dry run with
    /// `--force-conflicts`, the fields forcing would take over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
    /// Readiness.
    pub status: Status,
    /// For objects not ready or failed: pods, container states and warning events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// A note, e.g. why a dry run could not check an object on the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What happened to every object, in bundle order.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyReport {
    /// One entry per manifest.
    pub objects: Vec<ObjectResult>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Number of waves.
    pub waves: usize,
    /// Time spent applying (including waits between waves).
    pub apply_millis: u64,
    /// Time spent waiting for readiness after the last wave.
    pub wait_millis: u64,
}

impl ApplyReport {
    /// Objects that failed to apply or failed readiness.
    pub fn failed(&self) -> impl Iterator<Item = &ObjectResult> {
        self.objects
            .iter()
            .filter(|o| o.action == Action::Failed || matches!(o.status, Status::Failed(_)))
    }

    /// Objects waited for but not ready.
    pub fn not_ready(&self) -> impl Iterator<Item = &ObjectResult> {
        self.objects
            .iter()
            .filter(|o| matches!(o.status, Status::NotReady(_)))
    }

    /// Count of objects with this action.
    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }

    /// How many objects were created, configured, unchanged, recreated and
    /// pruned, by action name; actions no object had are left out.
    pub fn action_counts(&self) -> std::collections::BTreeMap<String, usize> {
        [
            Action::Created,
            Action::Configured,
            Action::Unchanged,
            Action::Recreated,
            Action::Pruned,
        ]
        .into_iter()
        .map(|a| (a.as_str().to_string(), self.count(a)))
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// Progress of an apply, for the caller's sink.
#[derive(Debug, Clone)]
pub enum ApplyEvent {
    /// The bundle is resolved and ordered.
    Planned {
        /// Number of objects.
        objects: usize,
        /// Number of waves.
        waves: usize,
    },
    /// One object was applied (or failed, was skipped, or pruned).
    Applied {
        /// The object.
        object: ObjectRef,
        /// What happened.
        action: Action,
        /// Why, when it failed or was skipped.
        error: Option<ObjectError>,
    },
    /// An object was deleted to be recreated (immutable field changed, policy on).
    Recreating {
        /// The object.
        object: ObjectRef,
        /// The server's rejection.
        reason: String,
    },
    /// Waiting for objects to be ready starts.
    Waiting {
        /// Number of objects waited for.
        objects: usize,
    },
    /// An object's readiness changed while waiting.
    Progress {
        /// The object.
        object: ObjectRef,
        /// Why it is not ready yet.
        reason: String,
    },
    /// An object became ready.
    Ready {
        /// The object.
        object: ObjectRef,
    },
    /// An object failed while waiting.
    NotReady {
        /// The object.
        object: ObjectRef,
        /// Why.
        reason: String,
    },
}

fn push_object(out: &mut String, o: &ObjectResult) {
    let _ = write!(out, "\n  {} ({}): ", o.object, o.source);
    let mut parts = Vec::new();
    if let Some(e) = &o.error {
        parts.push(e.to_string());
    }
    match &o.status {
        Status::NotReady(r) => parts.push(format!("not ready: {r}")),
        Status::Failed(r) => parts.push(format!("failed: {r}")),
        _ => {}
    }
    out.push_str(&parts.join("; "));
    for d in &o.diagnostics {
        let _ = write!(out, "\n      {d}");
    }
}

pub(crate) fn failure_text(report: &ApplyReport) -> String {
    let failed: Vec<&ObjectResult> = report.failed().collect();
    let skipped = report.count(Action::Skipped);
    let mut out = format!(
        "{} of {} objects failed",
        failed.len(),
        report.objects.len()
    );
    if skipped > 0 {
        let _ = write!(out, " ({skipped} not applied because of it)");
    }
    out.push(':');
    for o in failed {
        push_object(&mut out, o);
    }
    for o in report.not_ready() {
        push_object(&mut out, o);
    }
    out
}

pub(crate) fn timeout_text(report: &ApplyReport, timeout: &Duration) -> String {
    let not_ready: Vec<&ObjectResult> = report.not_ready().chain(report.failed()).collect();
    let mut out = format!(
        "timed out after {} with {} of {} objects not ready (raise the timeout or fix the objects below):",
        humanize(*timeout),
        not_ready.len(),
        report.objects.len()
    );
    for o in not_ready {
        push_object(&mut out, o);
    }
    let skipped = report.count(Action::Skipped);
    if skipped > 0 {
        let _ = write!(out, "\n  ({skipped} objects were not applied yet)");
    }
    out
}

/// `1m30s`, `250ms`.
pub(crate) fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}
