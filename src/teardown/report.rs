//! What a teardown did, per stage and per object: the `teardown` section
//! of a DESTROY job's report (`docs/report.schema.json`).

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apply::ObjectRef;

/// The stages of a teardown, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Argo CD Applications in Argo CD's namespace (the root one first),
    /// deleted with Argo CD's resources finalizer.
    Applications,
    /// Services of type `LoadBalancer`.
    LoadBalancerServices,
    /// Ingresses.
    Ingresses,
    /// PersistentVolumeClaims.
    PersistentVolumeClaims,
    /// The PersistentVolumes of those claims (deleted by their provisioner,
    /// not by the teardown; waited for when their reclaim policy is `Delete`).
    PersistentVolumes,
}

impl Stage {
    /// Lower-case name, as in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Applications => "applications",
            Stage::LoadBalancerServices => "load_balancer_services",
            Stage::Ingresses => "ingresses",
            Stage::PersistentVolumeClaims => "persistent_volume_claims",
            Stage::PersistentVolumes => "persistent_volumes",
        }
    }
}

/// What became of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// This run sent the delete and the object was gone before the deadline.
    Deleted,
    /// The object went without a delete from this run: it was gone when the
    /// delete arrived (`404`), or it is a PersistentVolume its provisioner
    /// deleted.
    Gone,
    /// Still there when the wait ended.
    Remaining(Remaining),
    /// A PersistentVolume its reclaim policy keeps (`Retain`, `Recycle`):
    /// left in place by design, not waited for.
    Retained {
        /// `spec.persistentVolumeReclaimPolicy`.
        reclaim_policy: String,
        /// `status.phase`, when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
    },
}

/// The state of an object that outlived the wait: why it is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Remaining {
    /// Whether its deletion was requested (`metadata.deletionTimestamp` is set).
    pub deletion_requested: bool,
    /// The finalizers that still hold it.
    pub finalizers: Vec<String>,
    /// `status.phase`, for the kinds that have one (PersistentVolumes and claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `spec.persistentVolumeReclaimPolicy`, for PersistentVolumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<String>,
}

impl Remaining {
    /// One sentence: why the object is still there and who must act.
    pub fn reason(&self) -> String {
        let mut out = String::new();
        if self.deletion_requested {
            out.push_str("deletion requested");
            if self.finalizers.is_empty() {
                out.push_str(", not gone yet");
            } else {
                let _ = write!(
                    out,
                    "; held by finalizer{} {} (the controller that set {} has not removed {})",
                    if self.finalizers.len() == 1 { "" } else { "s" },
                    self.finalizers.join(", "),
                    if self.finalizers.len() == 1 {
                        "it"
                    } else {
                        "them"
                    },
                    if self.finalizers.len() == 1 {
                        "it"
                    } else {
                        "them"
                    },
                );
            }
        } else {
            out.push_str("not being deleted");
        }
        if let Some(phase) = &self.phase {
            let _ = write!(out, "; phase {phase}");
        }
        if let Some(policy) = &self.reclaim_policy {
            let _ = write!(out, ", reclaim policy {policy}");
            if !self.deletion_requested {
                out.push_str(match self.phase.as_deref() {
                    Some("Bound") => ": its claim is not gone yet",
                    _ => ": waiting for its provisioner to delete the volume",
                });
            }
        }
        out
    }
}

/// One object and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectOutcome {
    /// The object.
    pub object: ObjectRef,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Something worth knowing, e.g. that its deletion began before this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One stage: the objects it found and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Why the stage did nothing, when it was skipped (e.g. Argo CD is not installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Every object the stage found, in the order it handled them.
    pub objects: Vec<ObjectOutcome>,
    /// Time from the stage's start until its last object was settled.
    pub millis: u64,
}

impl StageReport {
    /// Objects with this outcome's variant.
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.objects.iter().filter(|o| f(&o.outcome)).count()
    }
}

/// What a teardown did: one entry per stage, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TeardownReport {
    /// The stages.
    pub stages: Vec<StageReport>,
    /// Whether the wait ended because the timeout passed.
    pub timed_out: bool,
    /// Time the whole teardown took.
    pub elapsed_millis: u64,
}

impl TeardownReport {
    /// Whether nothing remains (objects kept by their reclaim policy do not count).
    pub fn is_clean(&self) -> bool {
        self.remaining().next().is_none()
    }

    /// The objects that outlived the wait, with why.
    pub fn remaining(&self) -> impl Iterator<Item = (&ObjectRef, &Remaining)> {
        self.stages
            .iter()
            .flat_map(|s| &s.objects)
            .filter_map(|o| match &o.outcome {
                Outcome::Remaining(r) => Some((&o.object, r)),
                _ => None,
            })
    }

    /// PersistentVolumes kept by their reclaim policy (by design).
    pub fn retained(&self) -> impl Iterator<Item = &ObjectOutcome> {
        self.stages
            .iter()
            .flat_map(|s| &s.objects)
            .filter(|o| matches!(o.outcome, Outcome::Retained { .. }))
    }

    /// The report of one stage.
    pub fn stage(&self, stage: Stage) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// A few lines for people: per stage what was deleted, then every
    /// object that remains with why.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.stages {
            let _ = write!(out, "{}: ", s.stage.as_str());
            if let Some(why) = &s.skipped {
                let _ = writeln!(out, "skipped ({why})");
                continue;
            }
            let deleted = s.count(|o| *o == Outcome::Deleted);
            let gone = s.count(|o| *o == Outcome::Gone);
            let remaining = s.count(|o| matches!(o, Outcome::Remaining(_)));
            let retained = s.count(|o| matches!(o, Outcome::Retained { .. }));
            let _ = write!(out, "{deleted} deleted, {gone} already gone");
            if retained > 0 {
                let _ = write!(out, ", {retained} retained by reclaim policy");
            }
            if remaining > 0 {
                let _ = write!(out, ", {remaining} remaining");
            }
            out.push('\n');
        }
        for o in self.stages.iter().flat_map(|s| &s.objects) {
            if let Outcome::Remaining(r) = &o.outcome {
                let _ = write!(out, "  remaining: {}: {}", o.object, r.reason());
                if let Some(note) = &o.note {
                    let _ = write!(out, " ({note})");
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let report = TeardownReport {
            stages: vec![
                StageReport {
                    stage: Stage::LoadBalancerServices,
                    skipped: None,
                    objects: vec![
                        ObjectOutcome {
                            object: object("Service", "ingress-lb"),
                            outcome: Outcome::Remaining(Remaining {
                                deletion_requested: true,
                                finalizers: vec![
                                    "service.kubernetes.io/load-balancer-cleanup".into(),
                                ],
                                phase: None,
                                reclaim_policy: None,
                            }),
                            note: Some("its deletion began before this run".into()),
                        },
                        ObjectOutcome {
                            object: object("Service", "web"),
                            outcome: Outcome::Deleted,
                            note: None,
                        },
                    ],
                    millis: 3000,
                },
                StageReport {
                    stage: Stage::PersistentVolumes,
                    skipped: None,
                    objects: vec![ObjectOutcome {
                        object: ObjectRef {
                            namespace: None,
                            ..object("PersistentVolume", "pv-1")
                        },
                        outcome: Outcome::Retained {
                            reclaim_policy: "Retain".into(),
                            phase: Some("Released".into()),
                        },
                        note: None,
                    }],
                    millis: 0,
                },
            ],
            timed_out: true,
            elapsed_millis: 3001,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["stages"][0]["objects"][0]["outcome"], "remaining");
        assert_eq!(json["stages"][0]["objects"][0]["deletion_requested"], true);
        let back: TeardownReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.remaining().count(), 1);
    }
}
