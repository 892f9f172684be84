//! Why an object is not ready: its pods, their containers and recent warning events.

use super::ObjectRef;
use super::readiness::container_problems;
use kube::Client;
use kube::api::{DynamicObject, GetParams, ListParams};
use kube::core::{ApiResource, Request, Resource};
use serde_json::Value;

/// How many pods and warning events are described per object.
const MAX_PODS: usize = 5;
const MAX_EVENTS: usize = 3;

/// Lines describing an object that is not ready. Best effort: read errors
/// become a line of their own.
pub(crate) async fn diagnose(client: &Client, id: &ObjectRef, ar: &ApiResource) -> Vec<String> {
    let mut out = Vec::new();
    let Some(ns) = id.namespace.as_deref() else {
        return out;
    };
    let selector = if id.group.is_empty() && id.kind == "Pod" {
        None
    } else {
        let req = Request::new(DynamicObject::url_path(ar, Some(ns)));
        let live = match req.get(&id.name, &GetParams::default()) {
            Ok(r) => client.request::<Value>(r).await.ok(),
            Err(_) => None,
        };
        match live.as_ref().and_then(|l| pod_selector(id, l)) {
            Some(s) => Some(s),
            None => {
                let mut names = vec![id.name.clone()];
                events(client, ns, &mut names, &mut out).await;
                return out;
            }
        }
    };
    let pods: Vec<Value> = match &selector {
        None => {
            let req = Request::new(format!("/api/v1/namespaces/{ns}/pods"));
            match req.get(&id.name, &GetParams::default()) {
                Ok(r) => client.request::<Value>(r).await.ok().into_iter().collect(),
                Err(_) => Vec::new(),
            }
        }
        Some(sel) => {
            let req = Request::new(format!("/api/v1/namespaces/{ns}/pods"));
            match req.list(&ListParams::default().labels(sel)) {
                Ok(r) => match client.request::<Value>(r).await {
                    Ok(list) => list
                        .get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    Err(e) => {
                        out.push(format!("cannot list pods ({sel}): {e}"));
                        Vec::new()
                    }
                },
                Err(_) => Vec::new(),
            }
        }
    };
    if selector.is_some() && pods.is_empty() {
        out.push(format!(
            "no pods match {}",
            selector.as_deref().unwrap_or("")
        ));
    }
    let mut names = vec![id.name.clone()];
    for pod in pods.iter().take(MAX_PODS) {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        names.push(name.to_string());
        out.push(describe_pod(pod));
    }
    if pods.len() > MAX_PODS {
        out.push(format!("... and {} more pods", pods.len() - MAX_PODS));
    }
    events(client, ns, &mut names, &mut out).await;
    out
}

/// `pod NAME: phase P, not ready (reason); container c: CrashLoopBackOff (...)`.
pub(crate) fn describe_pod(pod: &Value) -> String {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    let mut text = format!("pod {name}: phase {phase}");
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for c in conditions {
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        if (ty == "Ready" || ty == "PodScheduled") && status != "True" {
            let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
            let message = c.get("message").and_then(Value::as_str).unwrap_or("");
            text.push_str(&format!(", {ty} {status}"));
            if !reason.is_empty() || !message.is_empty() {
                text.push_str(&format!(
                    " ({reason}{}{message})",
                    if reason.is_empty() || message.is_empty() {
                        ""
                    } else {
                        ": "
                    }
                ));
            }
        }
    }
    for (c, p) in container_problems(pod) {
        text.push_str(&format!("; container {c}: {p}"));
    }
    text
}

fn pod_selector(id: &ObjectRef, live: &Value) -> Option<String> {
    let labels = match (id.group.as_str(), id.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch", "Job") => {
            live.pointer("/spec/selector/matchLabels")
        }
        _ => return None,
    };
    match labels.and_then(Value::as_object) {
        Some(map) if !map.is_empty() => Some(
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ if id.kind == "Job" => Some(format!("job-name={}", id.name)),
        _ => None,
    }
}

/// Appends the latest warning events about `names` in `ns`.
async fn events(client: &Client, ns: &str, names: &mut [String], out: &mut Vec<String>) {
    let req = Request::new(format!("/api/v1/namespaces/{ns}/events"));
    let Ok(r) = req.list(&ListParams::default().fields("type=Warning")) else {
        return;
    };
    let list = match client.request::<Value>(r).await {
        Ok(l) => l,
        Err(e) => {
            out.push(format!("cannot list events: {e}"));
            return;
        }
    };
    let mut found: Vec<(String, String)> = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("Warning"))
        .filter(|e| {
            e.pointer("/involvedObject/name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        })
        .map(|e| {
            let when = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .find_map(|k| e.get(*k).and_then(Value::as_str))
                .or_else(|| {
                    e.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                })
                .unwrap_or("")
                .to_string();
            let kind = e
                .pointer("/involvedObject/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = e
                .pointer("/involvedObject/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            (
                when,
                format!("warning on {kind}/{name}: {reason}: {message}"),
            )
        })
        .collect();
    found.sort();
    let skip = found.len().saturating_sub(MAX_EVENTS);
    out.extend(found.into_iter().skip(skip).map(|(_, t)| t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_description_names_phase_conditions_and_containers() {
        let pod = serde_json::json!({"metadata": {"name": "web-1"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\""}}}]}});
        let d = describe_pod(&pod);
        assert!(d.starts_with("pod web-1: phase Pending"), "{d}");
        assert!(d.contains("Ready False (ContainersNotReady)"), "{d}");
        assert!(d.contains("container app: ImagePullBackOff"), "{d}");
    }
}
