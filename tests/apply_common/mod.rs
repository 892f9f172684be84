//! Helpers shared by the apply tests. Every test runs against
//! `tendril_testkit::e2e::cluster()`: the in-repo API server, or the real
//! cluster `TENDRIL_E2E_KUBECONFIG` names. Where a test needs an object's
//! status to change, it writes the status through the status subresource
//! exactly as the object's controller would; on a real cluster the real
//! controller produces the same status, so the writes are skipped there.
#![allow(dead_code)]

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendril::apply::{
    ApplyError, ApplyEvent, ApplyOptions, ApplyReport, Manifest, ObjectResult, ResourceManager,
    parse_manifests,
};
use tendril_testkit::e2e::TestCluster;

/// Manifests from YAML text.
pub fn manifests(yaml: &str) -> Vec<Manifest> {
    parse_manifests("test.yaml", yaml).expect("test manifests parse")
}

/// Options for tests: generous timeout.
pub fn opts() -> ApplyOptions {
    ApplyOptions {
        timeout: Duration::from_secs(90),
        ..ApplyOptions::default()
    }
}

/// `opts` recording the bundle in apply set `name` (a Secret in `ns`), with pruning.
pub fn in_applyset(mut opts: ApplyOptions, name: &str, ns: &str) -> ApplyOptions {
    opts.applyset = Some(tendril::apply::ApplySet::new(name, ns).expect("valid apply set name"));
    opts.prune = true;
    opts
}

/// Collects progress events.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<ApplyEvent>>>);

impl Events {
    pub fn sink(&self) -> impl Fn(ApplyEvent) + Send + Sync + 'static {
        let inner = self.0.clone();
        move |e| inner.lock().unwrap().push(e)
    }
    pub fn all(&self) -> Vec<ApplyEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Applies `yaml` with `opts`, default namespace `ns`.
pub async fn apply(
    cluster: &TestCluster,
    ns: &str,
    yaml: impl Into<String>,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let yaml: String = yaml.into();
    let rm = ResourceManager::new(cluster.client(), ns);
    let events = Events::default();
    let sink = events.sink();
    rm.apply(manifests(&yaml), opts, &sink).await
}

/// Like [`apply`], also returning the progress events.
pub async fn apply_with_events(
    cluster: &TestCluster,
    ns: &str,
    yaml: &str,
    opts: &ApplyOptions,
) -> (Result<ApplyReport, ApplyError>, Vec<ApplyEvent>) {
    let rm = ResourceManager::new(cluster.client(), ns);
    let events = Events::default();
    let sink = events.sink();
    let r = rm.apply(manifests(yaml), opts, &sink).await;
    (r, events.all())
}

/// The result for the object of this kind and name.
pub fn result<'a>(report: &'a ApplyReport, kind: &str, name: &str) -> &'a ObjectResult {
    report
        .objects
        .iter()
        .find(|o| o.object.kind == kind && o.object.name == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in report: {report:#?}"))
}

pub fn api(
    cluster: &TestCluster,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(cluster.client(), ns, &ar),
        None => Api::all_with(cluster.client(), &ar),
    }
}

/// Reads an object as JSON, `None` when absent. Absent includes a kind not
/// served yet: a real server answers an unknown group with a text/plain
/// `404 page not found`, not a JSON NotFound, so only the code is checked.
pub async fn get(api: &Api<DynamicObject>, name: &str) -> Option<Value> {
    match api.get(name).await {
        Ok(o) => Some(serde_json::to_value(o).unwrap()),
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

/// Waits (polling; test side only) until the object exists, and returns it.
pub async fn wait_exists(api: &Api<DynamicObject>, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + tendril_testkit::e2e::WAIT;
    loop {
        if let Some(v) = get(api, name).await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes status through the status subresource (merge patch), like a controller.
pub async fn set_status(api: &Api<DynamicObject>, name: &str, status: Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot set status of {name}: {e}"));
}

/// Like [`set_status`] but only on the in-repo server (a real cluster's controller writes it).
pub async fn simulate_status(
    cluster: &TestCluster,
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) {
    if !cluster.is_real() {
        set_status(api, name, status).await;
    }
}

/// SSA of an object by another field manager.
pub async fn apply_as(api: &Api<DynamicObject>, manager: &str, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply(manager), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply as {manager}: {e}"));
}

/// A CRD for `plural.group` with a status subresource, accepting any fields.
pub fn crd_yaml(group: &str, kind: &str, plural: &str, scope: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  scope: {scope}
  names:
    kind: {kind}
    plural: {plural}
    singular: {singular}
    listKind: {kind}List
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#,
        singular = kind.to_lowercase()
    )
}

/// Deletes a cluster-scoped object, ignoring "not found".
pub async fn delete_cluster_object(
    cluster: &TestCluster,
    api_version: &str,
    kind: &str,
    plural: &str,
    name: &str,
) {
    let a = api(cluster, api_version, kind, plural, None);
    let _ = a.delete(name, &Default::default()).await;
}

/// A unique DNS-label-ish suffix for cluster-scoped names.
pub fn unique(prefix: &str) -> String {
    tendril_testkit::e2e::unique_name(prefix)
}

/// SSA by another field manager, taking fields over (`force=true`).
pub async fn apply_as_forced(api: &Api<DynamicObject>, manager: &str, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("forced apply as {manager}: {e}"));
}
