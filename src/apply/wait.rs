//! Waiting until objects are ready: one watch per object (kube-runtime's
//! watcher, `fieldSelector=metadata.name=...`), judged by the readiness rules.

use super::object::Slim;
use super::readiness::{self, Readiness, ReadinessOptions};
use super::report::ApplyEvent;
use super::{ObjectRef, Sink};
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::core::{ApiResource, Resource};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Something to wait for.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub id: ObjectRef,
    pub ar: ApiResource,
    /// The generation our apply produced (its controller must have observed it).
    pub generation: Option<i64>,
    /// What is known so far.
    pub last: Readiness,
}

/// Waits until each target is ready or failed, or the deadline passes;
/// returns the last readiness of each target, in order.
pub(crate) async fn wait_all(
    client: &Client,
    targets: &[Target],
    deadline: Instant,
    rules: &ReadinessOptions,
    progress: Sink<'_>,
) -> Vec<Readiness> {
    let last: Arc<Mutex<Vec<Readiness>>> =
        Arc::new(Mutex::new(targets.iter().map(|t| t.last.clone()).collect()));
    for t in targets {
        if let Readiness::InProgress(reason) = &t.last {
            progress(ApplyEvent::Progress {
                object: t.id.clone(),
                reason: reason.clone(),
            });
        }
    }
    let watches = targets.iter().enumerate().map(|(k, t)| {
        let last = last.clone();
        async move { watch_one(client, t, rules, progress, |r| record(&last, k, r)).await }
    });
    let _ = tokio::time::timeout_at(deadline, futures::future::join_all(watches)).await;
    match last.lock() {
        Ok(l) => l.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Stores a target's readiness; whether it changed.
fn record(last: &Mutex<Vec<Readiness>>, k: usize, r: &Readiness) -> bool {
    match last.lock() {
        Ok(mut l) => {
            let changed = l[k] != *r;
            l[k] = r.clone();
            changed
        }
        Err(_) => true,
    }
}

/// Watches one object until it is ready or failed, reporting changes.
async fn watch_one(
    client: &Client,
    t: &Target,
    rules: &ReadinessOptions,
    progress: Sink<'_>,
    record: impl Fn(&Readiness) -> bool,
) {
    let api: Api<Watched> = match t.id.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &t.ar),
        None => Api::all_with(client.clone(), &t.ar),
    };
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", t.id.name));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen = false;
    while let Some(ev) = stream.next().await {
        let r = match ev {
            Ok(Event::Init) => {
                seen = false;
                continue;
            }
            Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                if o.meta.name.as_deref() != Some(&t.id.name) {
                    continue;
                }
                seen = true;
                // List items carry no apiVersion/kind on a real server: use ours.
                let mut slim = o.slim;
                slim.api_version.clone_from(&t.ar.api_version);
                slim.kind.clone_from(&t.ar.kind);
                readiness::readiness(&slim.to_value(), t.generation, rules)
            }
            Ok(Event::Delete(o)) if o.meta.name.as_deref() == Some(&t.id.name) => {
                Readiness::InProgress("the object was deleted".into())
            }
            Ok(Event::InitDone) if !seen => {
                Readiness::InProgress("the object does not exist".into())
            }
            Ok(_) => continue,
            Err(e) => Readiness::InProgress(format!("watch failed: {e}")),
        };
        let changed = record(&r);
        match &r {
            Readiness::Ready => {
                progress(ApplyEvent::Ready {
                    object: t.id.clone(),
                });
                return;
            }
            Readiness::Failed(reason) => {
                progress(ApplyEvent::NotReady {
                    object: t.id.clone(),
                    reason: reason.clone(),
                });
                return;
            }
            Readiness::InProgress(reason) if changed => progress(ApplyEvent::Progress {
                object: t.id.clone(),
                reason: reason.clone(),
            }),
            Readiness::InProgress(_) => {}
        }
    }
}

/// A watched object: the slim view, as a kube [`Resource`] for the watcher.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(from = "Slim")]
pub(crate) struct Watched {
    slim: Slim,
    /// Name, namespace and resourceVersion (the watcher resumes from it).
    meta: kube::api::ObjectMeta,
}

impl From<Slim> for Watched {
    fn from(slim: Slim) -> Self {
        let meta = kube::api::ObjectMeta {
            name: Some(slim.metadata.name.clone()),
            namespace: slim.metadata.namespace.clone(),
            resource_version: slim.metadata.resource_version.clone(),
            generation: slim.metadata.generation,
            ..Default::default()
        };
        Watched { slim, meta }
    }
}

impl Resource for Watched {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &kube::api::ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slim_view_keeps_what_readiness_needs() {
        let full = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "generation": 4, "resourceVersion": "77",
                         "managedFields": [{"manager": "x", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
        let slim: Slim = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("77"));
        assert_eq!(slim.metadata.managed_fields[0].manager, "x");
        let v = slim.to_value();
        assert!(v.pointer("/metadata/managedFields").is_none());
        assert!(v.pointer("/spec/template").is_none());
        let o = ReadinessOptions::default();
        assert_eq!(
            readiness::readiness(&v, Some(4), &o),
            readiness::readiness(&full, Some(4), &o)
        );
    }

    #[test]
    fn watched_list_items_without_kind_keep_resource_version() {
        // List items from a real API server carry no apiVersion/kind.
        let item = serde_json::json!({"metadata": {"name": "d", "resourceVersion": "9", "generation": 1},
            "spec": {"replicas": 1}, "status": {"observedGeneration": 1}});
        let w: Watched = serde_json::from_value(item).unwrap();
        assert_eq!(w.meta.resource_version.as_deref(), Some("9"));
        assert_eq!(w.meta.name.as_deref(), Some("d"));
        assert_eq!(w.slim.kind, "");
    }
}
