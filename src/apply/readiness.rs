//! Readiness rules per kind, judged on an object's JSON.
//!
//! The rules follow kstatus' documented ones, with its known gaps fixed:
//!
//! - an object whose controller reports `status.observedGeneration` is judged
//!   only once that is at least the generation our apply produced (workloads
//!   must report it; conditions that carry their own `observedGeneration` must
//!   have observed it too);
//! - a failed Pod and a failed Job are failures, not "done";
//! - a Deployment whose `Progressing` condition says `ProgressDeadlineExceeded`
//!   is a failure;
//! - a Pod stuck on an image that can never be pulled is a failure, and
//!   `CrashLoopBackOff` / image pull back-off are reported as the reason.

use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Readiness {
    /// Ready (or, for a Job or Pod, completed successfully).
    Ready,
    /// Not ready yet, and why.
    InProgress(String),
    /// Failed; waiting longer will not help.
    Failed(String),
}

impl Readiness {
    /// Whether this is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
    /// Whether this is [`Readiness::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Readiness::Failed(_))
    }
}

/// A readiness rule for kinds the built-in rules do not know (or judge
/// differently), e.g. Argo CD's `Application` (see `tendril::appofapps`).
pub trait ReadinessRule: Send + Sync {
    /// Whether this rule judges objects of this API group and kind.
    fn judges(&self, group: &str, kind: &str) -> bool;
    /// Judges an object; `generation` is the one our apply produced.
    fn judge(&self, obj: &Value, generation: Option<i64>) -> Readiness;
}

/// Optional rules, off unless asked for.
#[derive(Clone, Default)]
pub struct ReadinessOptions {
    /// A Service of type LoadBalancer is ready only once an ingress address is assigned.
    pub load_balancers: bool,
    /// Extra rules, asked before the built-in ones (the first that judges a kind wins).
    pub rules: Vec<Arc<dyn ReadinessRule>>,
}

impl fmt::Debug for ReadinessOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessOptions")
            .field("load_balancers", &self.load_balancers)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl ReadinessOptions {
    /// These options with one more rule.
    pub fn with_rule(mut self, rule: impl ReadinessRule + 'static) -> Self {
        self.rules.push(Arc::new(rule));
        self
    }

    fn rule_for(&self, group: &str, kind: &str) -> Option<&dyn ReadinessRule> {
        self.rules
            .iter()
            .find(|r| r.judges(group, kind))
            .map(|r| r.as_ref())
    }

    /// Whether an existing object of this kind can be judged only by reading
    /// its status. Kinds without status (ConfigMaps, Secrets, RBAC, ...) are
    /// ready once they exist, so an unchanged one needs no read.
    pub fn needs_status(&self, group: &str, kind: &str) -> bool {
        if self.rule_for(group, kind).is_some() {
            return true;
        }
        match (group, kind) {
            ("", "Service") => self.load_balancers,
            (
                "",
                "ConfigMap" | "Secret" | "ServiceAccount" | "Namespace" | "Endpoints"
                | "LimitRange",
            )
            | ("rbac.authorization.k8s.io", _)
            | ("networking.k8s.io", "NetworkPolicy" | "IngressClass")
            | ("storage.k8s.io", "StorageClass")
            | ("scheduling.k8s.io", _)
            | ("policy", "PodDisruptionBudget")
            | ("admissionregistration.k8s.io", _)
            | ("coordination.k8s.io", _) => false,
            _ => true,
        }
    }
}

/// Judges an object. `applied_generation` is `metadata.generation` of the
/// object our apply produced (the controller must have observed at least it).
pub fn readiness(
    obj: &Value,
    applied_generation: Option<i64>,
    opts: &ReadinessOptions,
) -> Readiness {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let generation = applied_generation.or_else(|| int(obj, "/metadata/generation"));
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Readiness::InProgress("being deleted".into());
    }
    if let Some(rule) = opts.rule_for(group, kind) {
        return rule.judge(obj, generation);
    }
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj, generation),
        ("apps", "StatefulSet") => statefulset(obj, generation),
        ("apps", "DaemonSet") => daemonset(obj, generation),
        ("apps", "ReplicaSet") => replicaset(obj, generation),
        ("", "Pod") => pod(obj),
        ("batch", "Job") => job(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Service") if opts.load_balancers => service(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => generic(obj, generation),
    }
}

/// The status string at a JSON pointer (for rules written elsewhere).
pub fn status_text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    string(obj, pointer)
}

fn int(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

fn string<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// A condition of `status.conditions` by type.
fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

fn cond_status(c: &Value) -> &str {
    c.get("status").and_then(Value::as_str).unwrap_or("Unknown")
}

fn cond_text(c: &Value) -> String {
    let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = c.get("message").and_then(Value::as_str).unwrap_or("");
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        (true, false) => message.to_string(),
        (true, true) => String::new(),
    }
}

/// The observedGeneration gate for controllers that must report it.
fn observed(obj: &Value, generation: Option<i64>, required: bool) -> Option<Readiness> {
    let observed = int(obj, "/status/observedGeneration");
    match (observed, generation) {
        (Some(o), Some(g)) if o < g => Some(Readiness::InProgress(format!(
            "controller has observed generation {o}, not yet {g}"
        ))),
        (None, Some(g)) if required => Some(Readiness::InProgress(format!(
            "controller has not observed generation {g} yet"
        ))),
        _ => None,
    }
}

fn desired_replicas(obj: &Value) -> i64 {
    int(obj, "/spec/replicas").unwrap_or(1)
}

fn deployment(obj: &Value, generation: Option<i64>) -> Readiness {
    if let Some(c) = condition(obj, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        return Readiness::Failed(format!("rollout failed: {}", cond_text(c)));
    }
    if let Some(r) = observed(obj, generation, true) {
        return r;
    }
    let want = desired_replicas(obj);
    let updated = int(obj, "/status/updatedReplicas").unwrap_or(0);
    let ready = int(obj, "/status/readyReplicas").unwrap_or(0);
    let available = int(obj, "/status/availableReplicas").unwrap_or(0);
    let total = int(obj, "/status/replicas").unwrap_or(0);
    if updated < want {
        return Readiness::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Readiness::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if ready < want {
        return Readiness::InProgress(format!("{ready} of {want} replicas ready"));
    }
    if available < want {
        return Readiness::InProgress(format!("{available} of {want} replicas available"));
    }
    Readiness::Ready
}

fn statefulset(obj: &Value, generation: Option<i64>) -> Readiness {
    if let Some(r) = observed(obj, generation, true) {
        return r;
    }
    let want = desired_replicas(obj);
    let ready = int(obj, "/status/readyReplicas").unwrap_or(0);
    let strategy = string(obj, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    if strategy == "RollingUpdate" {
        let partition = int(obj, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
        if partition > 0 {
            let updated = int(obj, "/status/updatedReplicas").unwrap_or(0);
            if updated < want - partition {
                return Readiness::InProgress(format!(
                    "{updated} of {} replicas updated (partition {partition})",
                    want - partition
                ));
            }
        } else {
            let current = string(obj, "/status/currentRevision").unwrap_or("");
            let update = string(obj, "/status/updateRevision").unwrap_or("");
            if current != update || update.is_empty() {
                let updated = int(obj, "/status/updatedReplicas").unwrap_or(0);
                return Readiness::InProgress(format!(
                    "rolling out revision {update:?}: {updated} of {want} replicas updated"
                ));
            }
        }
    }
    if ready < want {
        return Readiness::InProgress(format!("{ready} of {want} replicas ready"));
    }
    Readiness::Ready
}

fn daemonset(obj: &Value, generation: Option<i64>) -> Readiness {
    if let Some(r) = observed(obj, generation, true) {
        return r;
    }
    let want = int(obj, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(obj, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(obj, "/status/numberAvailable").unwrap_or(0);
    let ready = int(obj, "/status/numberReady").unwrap_or(0);
    if updated < want {
        return Readiness::InProgress(format!("{updated} of {want} pods updated"));
    }
    if ready < want {
        return Readiness::InProgress(format!("{ready} of {want} pods ready"));
    }
    if available < want {
        return Readiness::InProgress(format!("{available} of {want} pods available"));
    }
    Readiness::Ready
}

fn replicaset(obj: &Value, generation: Option<i64>) -> Readiness {
    if let Some(r) = observed(obj, generation, true) {
        return r;
    }
    let want = desired_replicas(obj);
    if let Some(c) = condition(obj, "ReplicaFailure")
        && cond_status(c) == "True"
    {
        return Readiness::InProgress(format!("replica failure: {}", cond_text(c)));
    }
    let ready = int(obj, "/status/readyReplicas").unwrap_or(0);
    let available = int(obj, "/status/availableReplicas").unwrap_or(0);
    let total = int(obj, "/status/replicas").unwrap_or(0);
    if total < want || ready < want {
        return Readiness::InProgress(format!("{ready} of {want} replicas ready"));
    }
    if available < want {
        return Readiness::InProgress(format!("{available} of {want} replicas available"));
    }
    Readiness::Ready
}

/// Container waiting reasons that never resolve by themselves.
const PERMANENT_WAITING: &[&str] = &["InvalidImageName", "ErrImageNeverPull"];

/// The waiting reasons of a pod's containers, `name: reason (message)`.
pub(crate) fn container_problems(pod: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for list in ["/status/initContainerStatuses", "/status/containerStatuses"] {
        for cs in obj_array(pod, list) {
            let name = cs.get("name").and_then(Value::as_str).unwrap_or("?");
            if let Some(w) = cs.pointer("/state/waiting") {
                let reason = w.get("reason").and_then(Value::as_str).unwrap_or("");
                if reason.is_empty() || reason == "ContainerCreating" || reason == "PodInitializing"
                {
                    continue;
                }
                let mut text = reason.to_string();
                if let Some(m) = w
                    .get("message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                {
                    text.push_str(&format!(" ({m})"));
                }
                out.push((name.to_string(), text));
            } else if let Some(t) = cs.pointer("/state/terminated") {
                let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
                if code != 0 {
                    let reason = t.get("reason").and_then(Value::as_str).unwrap_or("Error");
                    out.push((
                        name.to_string(),
                        format!("terminated: {reason}, exit code {code}"),
                    ));
                }
            }
        }
    }
    out
}

fn obj_array<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn pod(obj: &Value) -> Readiness {
    let phase = string(obj, "/status/phase").unwrap_or("Pending");
    match phase {
        "Succeeded" => return Readiness::Ready,
        "Failed" => {
            let reason = string(obj, "/status/reason")
                .or_else(|| string(obj, "/status/message"))
                .unwrap_or("");
            let problems = container_problems(obj);
            let mut text = String::from("pod failed");
            if !reason.is_empty() {
                text.push_str(&format!(": {reason}"));
            }
            for (c, p) in problems {
                text.push_str(&format!("; container {c}: {p}"));
            }
            return Readiness::Failed(text);
        }
        _ => {}
    }
    let problems = container_problems(obj);
    if let Some((c, p)) = problems
        .iter()
        .find(|(_, p)| PERMANENT_WAITING.iter().any(|r| p.starts_with(r)))
    {
        return Readiness::Failed(format!("container {c}: {p}"));
    }
    if let Some(c) = condition(obj, "Ready")
        && cond_status(c) == "True"
    {
        return Readiness::Ready;
    }
    if let Some((c, p)) = problems.first() {
        return Readiness::InProgress(format!("{phase}; container {c}: {p}"));
    }
    if let Some(c) = condition(obj, "PodScheduled")
        && cond_status(c) == "False"
    {
        return Readiness::InProgress(format!("not scheduled: {}", cond_text(c)));
    }
    Readiness::InProgress(format!("{phase}, not Ready"))
}

fn job(obj: &Value) -> Readiness {
    for ty in ["Failed", "FailureTarget"] {
        if let Some(c) = condition(obj, ty)
            && cond_status(c) == "True"
        {
            return Readiness::Failed(format!("job failed: {}", cond_text(c)));
        }
    }
    if let Some(c) = condition(obj, "Complete")
        && cond_status(c) == "True"
    {
        return Readiness::Ready;
    }
    let active = int(obj, "/status/active").unwrap_or(0);
    let succeeded = int(obj, "/status/succeeded").unwrap_or(0);
    let failed = int(obj, "/status/failed").unwrap_or(0);
    Readiness::InProgress(format!(
        "not complete: {active} active, {succeeded} succeeded, {failed} failed pods"
    ))
}

fn pvc(obj: &Value) -> Readiness {
    match string(obj, "/status/phase").unwrap_or("Pending") {
        "Bound" => Readiness::Ready,
        "Lost" => Readiness::Failed("claim lost its volume (phase Lost)".into()),
        other => Readiness::InProgress(format!("phase {other}, not Bound")),
    }
}

fn namespace(obj: &Value) -> Readiness {
    match string(obj, "/status/phase") {
        Some("Active") => Readiness::Ready,
        Some(other) => Readiness::InProgress(format!("phase {other}, not Active")),
        None => Readiness::InProgress("no phase yet".into()),
    }
}

fn service(obj: &Value) -> Readiness {
    if string(obj, "/spec/type") != Some("LoadBalancer") {
        return Readiness::Ready;
    }
    let assigned = obj_array(obj, "/status/loadBalancer/ingress").any(|i| {
        i.get("ip")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
            || i.get("hostname")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
    });
    if assigned {
        Readiness::Ready
    } else {
        Readiness::InProgress("load balancer has no ingress address yet".into())
    }
}

fn crd(obj: &Value) -> Readiness {
    if let Some(c) = condition(obj, "NamesAccepted")
        && cond_status(c) == "False"
    {
        return Readiness::Failed(format!("names not accepted: {}", cond_text(c)));
    }
    match condition(obj, "Established") {
        Some(c) if cond_status(c) == "True" => Readiness::Ready,
        Some(c) => Readiness::InProgress(format!("not Established: {}", cond_text(c))),
        None => Readiness::InProgress("not Established yet".into()),
    }
}

fn generic(obj: &Value, generation: Option<i64>) -> Readiness {
    if let Some(r) = observed(obj, generation, false) {
        return r;
    }
    if let Some(c) = condition(obj, "Stalled")
        && cond_status(c) == "True"
    {
        return Readiness::Failed(format!("stalled: {}", cond_text(c)));
    }
    let Some(c) = condition(obj, "Ready") else {
        return Readiness::Ready;
    };
    if let (Some(o), Some(g)) = (
        c.get("observedGeneration").and_then(Value::as_i64),
        generation,
    ) && o < g
    {
        return Readiness::InProgress(format!(
            "Ready condition is for generation {o}, not yet {g}"
        ));
    }
    if cond_status(c) == "True" {
        Readiness::Ready
    } else {
        let text = cond_text(c);
        Readiness::InProgress(if text.is_empty() {
            format!("Ready is {}", cond_status(c))
        } else {
            format!("Ready is {}: {text}", cond_status(c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NONE: ReadinessOptions = ReadinessOptions {
        load_balancers: false,
        rules: Vec::new(),
    };

    fn deploy(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployment_waits_for_observed_generation() {
        let d = deploy(
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
        );
        assert!(
            matches!(readiness(&d, Some(2), &NONE), Readiness::InProgress(r) if r.contains("generation"))
        );
        let d = deploy(json!({}));
        assert!(!readiness(&d, Some(2), &NONE).is_ready());
    }

    #[test]
    fn deployment_ready_only_when_all_counts_match() {
        let ok = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(readiness(&deploy(ok), Some(2), &NONE), Readiness::Ready);
        for (field, value) in [
            ("updatedReplicas", 1),
            ("readyReplicas", 1),
            ("availableReplicas", 1),
            ("replicas", 3),
        ] {
            let mut s = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
            s[field] = json!(value);
            let r = readiness(&deploy(s), Some(2), &NONE);
            assert!(matches!(r, Readiness::InProgress(_)), "{field}: {r:?}");
        }
    }

    #[test]
    fn deployment_progress_deadline_is_failure() {
        let s = json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"d-1\" has timed out progressing."}]});
        let r = readiness(&deploy(s), Some(2), &NONE);
        assert!(
            matches!(&r, Readiness::Failed(m) if m.contains("ProgressDeadlineExceeded")),
            "{r:?}"
        );
    }

    #[test]
    fn deployment_default_replicas_is_one() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "generation": 1}, "spec": {},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
        assert!(readiness(&d, None, &NONE).is_ready());
    }

    #[test]
    fn statefulset_needs_revisions_equal_and_ready() {
        let mk = |status: Value| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "generation": 1}, "spec": {"replicas": 1}, "status": status});
        let r = readiness(
            &mk(
                json!({"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
            ),
            None,
            &NONE,
        );
        assert!(!r.is_ready(), "{r:?}");
        let r = readiness(
            &mk(
                json!({"observedGeneration": 1, "readyReplicas": 0, "currentRevision": "b", "updateRevision": "b"}),
            ),
            None,
            &NONE,
        );
        assert!(!r.is_ready(), "{r:?}");
        let r = readiness(
            &mk(
                json!({"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "b", "updateRevision": "b"}),
            ),
            None,
            &NONE,
        );
        assert!(r.is_ready(), "{r:?}");
    }

    #[test]
    fn daemonset_and_replicaset() {
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 2, "numberAvailable": 2}});
        assert!(!readiness(&ds, None, &NONE).is_ready());
        let mut ds2 = ds.clone();
        ds2["status"]["numberReady"] = json!(3);
        ds2["status"]["numberAvailable"] = json!(3);
        assert!(readiness(&ds2, None, &NONE).is_ready());
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "x", "generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
        assert!(readiness(&rs, None, &NONE).is_ready());
    }

    #[test]
    fn pod_rules() {
        let mk = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status});
        assert!(
            readiness(
                &mk(
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
                ),
                None,
                &NONE
            )
            .is_ready()
        );
        assert!(readiness(&mk(json!({"phase": "Succeeded"})), None, &NONE).is_ready());
        assert!(
            readiness(
                &mk(json!({"phase": "Failed", "reason": "Evicted"})),
                None,
                &NONE
            )
            .is_failed()
        );
        let crash = mk(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}]}),
        );
        assert!(
            matches!(readiness(&crash, None, &NONE), Readiness::InProgress(r) if r.contains("CrashLoopBackOff") && r.contains("app"))
        );
        let pull = mk(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        assert!(
            matches!(readiness(&pull, None, &NONE), Readiness::InProgress(r) if r.contains("ImagePullBackOff"))
        );
        let bad = mk(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "InvalidImageName"}}}]}),
        );
        assert!(readiness(&bad, None, &NONE).is_failed());
    }

    #[test]
    fn job_rules() {
        let mk = |conds: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": conds}});
        assert!(
            readiness(
                &mk(json!([{"type": "Complete", "status": "True"}])),
                None,
                &NONE
            )
            .is_ready()
        );
        assert!(
            readiness(
                &mk(
                    json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
                ),
                None,
                &NONE
            )
            .is_failed()
        );
        assert!(!readiness(&mk(json!([])), None, &NONE).is_ready());
    }

    #[test]
    fn pvc_namespace_crd_service() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "status": {"phase": "Pending"}});
        assert!(!readiness(&pvc, None, &NONE).is_ready());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "status": {"phase": "Active"}});
        assert!(readiness(&ns, None, &NONE).is_ready());
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "a.b"},
            "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "False"}]}});
        assert!(!readiness(&crd, None, &NONE).is_ready());
        let lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert!(
            readiness(&lb, None, &NONE).is_ready(),
            "not asked: ready once it exists"
        );
        let asked = ReadinessOptions {
            load_balancers: true,
            rules: Vec::new(),
        };
        assert!(!readiness(&lb, None, &asked).is_ready());
        let mut lb2 = lb.clone();
        lb2["status"]["loadBalancer"]["ingress"] = json!([{"ip": "203.0.113.7"}]);
        assert!(readiness(&lb2, None, &asked).is_ready());
    }

    #[test]
    fn extra_rules_and_generic_ready_condition() {
        struct Healthy;
        impl ReadinessRule for Healthy {
            fn judges(&self, group: &str, kind: &str) -> bool {
                (group, kind) == ("example.com", "App")
            }
            fn judge(&self, obj: &Value, _: Option<i64>) -> Readiness {
                match status_text(obj, "/status/health") {
                    Some("Healthy") => Readiness::Ready,
                    other => Readiness::InProgress(format!("health {other:?}")),
                }
            }
        }
        let app = json!({"apiVersion": "example.com/v1", "kind": "App", "metadata": {"name": "a"},
            "status": {"health": "Progressing"}});
        let asked = ReadinessOptions::default().with_rule(Healthy);
        assert!(!readiness(&app, None, &asked).is_ready());
        assert!(asked.needs_status("example.com", "App"));
        assert!(readiness(&app, None, &NONE).is_ready());
        assert!(!NONE.needs_status("", "ConfigMap"));
        let cr = |status: &str, og: i64| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "generation": 3},
            "status": {"conditions": [{"type": "Ready", "status": status, "observedGeneration": og}]}})
        };
        assert!(!readiness(&cr("True", 2), None, &NONE).is_ready());
        assert!(readiness(&cr("True", 3), None, &NONE).is_ready());
        assert!(!readiness(&cr("False", 3), None, &NONE).is_ready());
        let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert!(readiness(&plain, None, &NONE).is_ready());
    }
}
