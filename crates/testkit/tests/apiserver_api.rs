//! The test API server against documented Kubernetes behaviour, through
//! kube-rs. Every test here runs unchanged against a real cluster when
//! `TENDRIL_E2E_KUBECONFIG` names a kubeconfig.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tendril_testkit::e2e::{self, WAIT};

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error Status, got {other}"),
    }
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_owned(),
                        e["operation"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn deployment(name: &str, app: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    })
}

async fn apply_json<K>(api: &Api<K>, name: &str, manager: &str, body: &Value) -> kube::Result<Value>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj = api
        .patch(name, &PatchParams::apply(manager), &Patch::Apply(body))
        .await?;
    Ok(serde_json::to_value(obj).unwrap())
}

#[tokio::test]
async fn discovery_lists_builtin_kinds_with_scope() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let cases = [
        ("apps", "Deployment", Scope::Namespaced, "deployments"),
        ("", "ConfigMap", Scope::Namespaced, "configmaps"),
        ("", "Namespace", Scope::Cluster, "namespaces"),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            Scope::Cluster,
            "clusterroles",
        ),
        ("batch", "Job", Scope::Namespaced, "jobs"),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            Scope::Cluster,
            "customresourcedefinitions",
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            Scope::Namespaced,
            "networkpolicies",
        ),
        (
            "policy",
            "PodDisruptionBudget",
            Scope::Namespaced,
            "poddisruptionbudgets",
        ),
        (
            "storage.k8s.io",
            "StorageClass",
            Scope::Cluster,
            "storageclasses",
        ),
    ];
    for (group, kind, scope, plural) in cases {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{kind} not discovered"));
        assert_eq!(ar.plural, plural);
        assert_eq!(caps.scope, scope, "{kind}");
        assert!(caps.supports_operation("patch"), "{kind} verbs");
        assert!(caps.supports_operation("watch"), "{kind} verbs");
    }
    // Aggregated discovery (Kubernetes 1.30+) gives the same answers.
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar, caps) = aggregated
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment in aggregated discovery");
    assert_eq!(ar.plural, "deployments");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        aggregated
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
            .is_some_and(|(_, c)| c.scope == Scope::Cluster)
    );
}

#[tokio::test]
async fn unknown_resource_is_404_status() {
    let cluster = e2e::cluster().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nothing.tendril.dev", "v1", "Nope"),
        "nopes",
    );
    let api: Api<DynamicObject> = Api::all_with(cluster.client(), &ar);
    // An unknown group is a text/plain `404 page not found` on a real
    // server (kube-rs cannot parse it as a Status): only the code holds.
    let err = api_err(api.get("x").await.unwrap_err());
    assert_eq!(err.code, 404);
    // An unknown resource in a served group is a JSON NotFound Status.
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", "Nope"), "nopes");
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), "default", &ar);
    let err = api_err(api.get("x").await.unwrap_err());
    assert_eq!(err.code, 404);
    assert_eq!(err.reason, "NotFound");
}

#[tokio::test]
async fn create_get_list_delete_with_metadata() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("crud").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("one", json!({"a": "1"}))).unwrap(),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let again = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("one", json!({}))).unwrap(),
        )
        .await
        .unwrap_err();
    let s = api_err(again);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));

    api.create(
        &PostParams::default(),
        &serde_json::from_value(cm("two", json!({"b": "2"}))).unwrap(),
    )
    .await
    .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert!(names.contains(&"one".to_owned()) && names.contains(&"two".to_owned()));
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv > rv1);

    // Paging with limit/continue returns every item exactly once.
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    let token = first.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    // The namespace also holds what the cluster adds (kube-root-ca.crt), so
    // only our two objects are counted: each exactly once across the pages.
    let mut ours: Vec<String> = first
        .items
        .iter()
        .chain(&rest.items)
        .filter_map(|c| c.metadata.name.clone())
        .filter(|n| n == "one" || n == "two")
        .collect();
    ours.sort();
    assert_eq!(ours, ["one", "two"]);

    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["a"], "1");
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let s = api_err(api.get("one").await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    ns.delete().await;
}

#[tokio::test]
async fn create_in_missing_namespace_is_404() {
    let cluster = e2e::cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), &e2e::unique_name("missing"));
    let err = api
        .patch(
            "x",
            &PatchParams::apply("tendril-test"),
            &Patch::Apply(cm("x", json!({}))),
        )
        .await
        .unwrap_err();
    let s = api_err(err);
    assert_eq!(s.code, 404);
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_tracks_managers() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("ssa").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());

    let v = apply_json(
        &api,
        "cfg",
        "alpha",
        &cm("cfg", json!({"a": "1", "b": "2"})),
    )
    .await
    .unwrap();
    assert_eq!(v["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(managers(&v), vec![("alpha".to_owned(), "Apply".to_owned())]);
    let owned = fields_of(&v, "alpha");
    assert!(
        owned["f:data"]["f:a"].is_object() && owned["f:data"]["f:b"].is_object(),
        "{owned}"
    );
    let rv1 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    // Re-applying the same configuration changes nothing: same resourceVersion.
    let same = apply_json(
        &api,
        "cfg",
        "alpha",
        &cm("cfg", json!({"a": "1", "b": "2"})),
    )
    .await
    .unwrap();
    assert_eq!(same["metadata"]["resourceVersion"], rv1.as_str());

    // A field the manager stops applying is removed.
    let v = apply_json(&api, "cfg", "alpha", &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(v["data"], json!({"a": "1"}));
    assert_ne!(v["metadata"]["resourceVersion"], rv1.as_str());

    // A second manager applying the same value shares ownership: no conflict,
    // and the field survives when the first manager drops it.
    apply_json(&api, "cfg", "beta", &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    let v = apply_json(&api, "cfg", "alpha", &cm("cfg", json!({"c": "3"})))
        .await
        .unwrap();
    assert_eq!(v["data"], json!({"a": "1", "c": "3"}));
    ns.delete().await;
}

#[tokio::test]
async fn apply_conflicts_name_the_manager_and_force_takes_over() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("conflict").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    apply_json(
        &api,
        "cfg",
        "owner",
        &cm("cfg", json!({"key": "one", "other": "x"})),
    )
    .await
    .unwrap();

    let err = apply_json(&api, "cfg", "intruder", &cm("cfg", json!({"key": "two"})))
        .await
        .unwrap_err();
    let s = api_err(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(s.message.contains("\"owner\""), "{}", s.message);
    assert!(s.message.contains(".data.key"), "{}", s.message);
    let causes = s.details.expect("details").causes;
    assert!(
        causes
            .iter()
            .any(|c| c.field == ".data.key" && c.reason == "FieldManagerConflict"),
        "{causes:?}"
    );
    // Unchanged by the rejected apply.
    assert_eq!(api.get("cfg").await.unwrap().data.unwrap()["key"], "one");

    let forced = api
        .patch(
            "cfg",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(cm("cfg", json!({"key": "two"}))),
        )
        .await
        .unwrap();
    let v = serde_json::to_value(&forced).unwrap();
    assert_eq!(v["data"]["key"], "two");
    assert!(fields_of(&v, "intruder")["f:data"]["f:key"].is_object());
    assert!(
        fields_of(&v, "owner")["f:data"]["f:key"].is_null(),
        "owner lost the field"
    );
    assert!(fields_of(&v, "owner")["f:data"]["f:other"].is_object());
    ns.delete().await;
}

#[tokio::test]
async fn apply_without_field_manager_is_rejected() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("nofm").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let err = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Apply(cm("cfg", json!({}))),
        )
        .await
        .unwrap_err();
    let s = api_err(err);
    assert!(s.code == 422 || s.code == 400, "{s:?}");
    assert!(s.message.contains("fieldManager"), "{}", s.message);
    ns.delete().await;
}

#[tokio::test]
async fn dry_run_answers_fully_and_stores_nothing() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("dry").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let v = api
        .patch(
            "cfg",
            &PatchParams::apply("tendril-test").dry_run(),
            &Patch::Apply(cm("cfg", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(v.data.unwrap()["a"], "1");
    assert!(v.metadata.managed_fields.is_some());
    assert_eq!(api_err(api.get("cfg").await.unwrap_err()).code, 404);

    apply_json(&api, "cfg", "tendril-test", &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    let dry = api
        .patch(
            "cfg",
            &PatchParams::apply("tendril-test").dry_run(),
            &Patch::Apply(cm("cfg", json!({"a": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["a"], "2");
    assert_eq!(api.get("cfg").await.unwrap().data.unwrap()["a"], "1");
    ns.delete().await;
}

#[tokio::test]
async fn generation_follows_spec_and_status_uses_its_subresource() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("gen").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    let mut body = deployment("web", "web", "nginx:1.27");
    body["status"] = json!({"replicas": 7});
    let v = apply_json(&api, "web", "tendril-test", &body)
        .await
        .unwrap();
    assert_eq!(v["metadata"]["generation"], 1);
    assert!(
        v["status"]["replicas"].is_null(),
        "status ignored on the main resource"
    );

    // A label is metadata: no new generation.
    let mut labelled = deployment("web", "web", "nginx:1.27");
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let v = apply_json(&api, "web", "tendril-test", &labelled)
        .await
        .unwrap();
    assert_eq!(v["metadata"]["generation"], 1);

    // A spec change: generation 2.
    let mut changed = labelled.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let v = apply_json(&api, "web", "tendril-test", &changed)
        .await
        .unwrap();
    assert_eq!(v["metadata"]["generation"], 2);

    // Status through the subresource, as a controller does; spec untouched.
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1,
                   "updatedReplicas": 1, "availableReplicas": 1}});
    let d = api
        .patch_status(
            "web",
            &PatchParams::apply("test-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["status"]["readyReplicas"], 1);
    assert_eq!(v["metadata"]["generation"], 2);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert!(
        v["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["manager"] == "test-controller" && e["subresource"] == "status")
    );
    ns.delete().await;
}

#[tokio::test]
async fn main_resource_writes_ignore_status() {
    // A LoadBalancer Service: a real server validates status written
    // through /status (an ingress is only allowed for this type), and a test
    // cluster has no cloud controller that would write it.
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("stat").await;
    let api: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let plain = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    apply_json(&api, "plain", "tendril-test", &plain)
        .await
        .unwrap();
    let status = json!({"apiVersion": "v1", "kind": "Service",
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    let err = api
        .patch_status(
            "plain",
            &PatchParams::apply("test-controller"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap_err();
    assert_eq!(api_err(err).code, 422, "ingress on a ClusterIP Service");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    apply_json(&api, "svc", "tendril-test", &svc).await.unwrap();
    let v = api
        .patch_status(
            "svc",
            &PatchParams::apply("test-controller"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let ingress = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone())
    };
    assert_eq!(ingress(&v).as_deref(), Some("192.0.2.10"));
    let patched = api
        .patch(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}})),
        )
        .await
        .unwrap();
    assert_eq!(ingress(&patched).as_deref(), Some("192.0.2.10"));
    let mut with_status = svc.clone();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.77"}]}});
    let applied: Service = serde_json::from_value(
        apply_json(&api, "svc", "tendril-test", &with_status)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ingress(&applied).as_deref(), Some("192.0.2.10"));
    ns.delete().await;
}

#[tokio::test]
async fn immutable_fields_are_rejected_as_invalid() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("immut").await;
    let deploys: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    apply_json(
        &deploys,
        "web",
        "tendril-test",
        &deployment("web", "web", "nginx"),
    )
    .await
    .unwrap();
    let err = apply_json(
        &deploys,
        "web",
        "tendril-test",
        &deployment("web", "other", "nginx"),
    )
    .await
    .unwrap_err();
    let s = api_err(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("spec.selector") && s.message.contains("field is immutable"),
        "{}",
        s.message
    );

    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let v = apply_json(&services, "svc", "tendril-test", &svc)
        .await
        .unwrap();
    let ip = v["spec"]["clusterIP"]
        .as_str()
        .expect("a clusterIP is allocated")
        .to_owned();
    // Re-applying without clusterIP keeps the allocated one.
    let v = apply_json(&services, "svc", "tendril-test", &svc)
        .await
        .unwrap();
    assert_eq!(v["spec"]["clusterIP"], ip.as_str());
    let mut moved = svc.clone();
    let other = if ip == "10.96.200.200" {
        "10.96.200.201"
    } else {
        "10.96.200.200"
    };
    moved["spec"]["clusterIP"] = json!(other);
    let s = api_err(
        apply_json(&services, "svc", "tendril-test", &moved)
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert!(s.message.contains("spec.clusterIP"), "{}", s.message);
    ns.delete().await;
}

#[tokio::test]
async fn crd_becomes_established_and_serves_its_resources() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let group = format!("{}.tendril.dev", e2e::unique_name("g"));
    let name = format!("widgets.{group}");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    });
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("tendril-test"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
    tokio::time::timeout(WAIT, established)
        .await
        .expect("CRD established in time")
        .unwrap();
    let got = crds.get(&name).await.unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    // Discovery can lag a moment behind Established on a real cluster.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (ar, caps) = loop {
        let discovery = Discovery::new(client.clone())
            .filter(&[&group])
            .run()
            .await
            .unwrap();
        if let Some(found) = discovery.resolve_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget")) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Widget never discovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(caps.scope, Scope::Namespaced);

    let ns = cluster.namespace("crd").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
    let w = json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": "w1"},
                   "spec": {"size": 3}});
    let created = widgets
        .patch("w1", &PatchParams::apply("tendril-test"), &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 3);
    assert_eq!(created.metadata.generation, Some(1));
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    ns.delete().await;
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_objects() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("nsdel").await;
    let name = ns.name().to_owned();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    apply_json(&api, "cfg", "tendril-test", &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let uid = namespaces.get(&name).await.unwrap().metadata.uid.unwrap();
    ns.delete().await;
    // Deletion is asynchronous (Terminating first): wait for this uid to go.
    let gone = await_condition(namespaces, &name, conditions::is_deleted(&uid));
    tokio::time::timeout(Duration::from_secs(180), gone)
        .await
        .expect("namespace gone in time")
        .unwrap();
    assert_eq!(api_err(api.get("cfg").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn watch_reports_changes_bookmarks_and_gone() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("watch").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .unwrap()
        .boxed();
    apply_json(&api, "cfg", "tendril-test", &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    apply_json(&api, "cfg", "tendril-test", &cm("cfg", json!({"a": "2"})))
        .await
        .unwrap();
    api.delete("cfg", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut bookmark = false;
    // Only cfg's events count: the cluster may add objects of its own.
    while seen.len() < 3 || !bookmark {
        let ev = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .unwrap();
        match ev {
            WatchEvent::Added(c) | WatchEvent::Modified(c) | WatchEvent::Deleted(c)
                if c.metadata.name.as_deref() != Some("cfg") => {}
            WatchEvent::Added(c) => {
                seen.push(("ADDED", c.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Modified(c) => {
                seen.push(("MODIFIED", c.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Deleted(c) => {
                seen.push(("DELETED", c.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                bookmark = true;
            }
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", Some("1".to_owned())),
            ("MODIFIED", Some("2".to_owned())),
            ("DELETED", Some("2".to_owned()))
        ]
    );

    // A watch from resourceVersion 1: a young cluster (and the test server)
    // replays its history, so cfg's events come again; a cluster that
    // compacted it answers 410 Expired. Either holds, nothing else.
    let from_one = api.watch(&WatchParams::default().timeout(5), "1").await;
    match from_one {
        Err(e) => assert_eq!(api_err(e).code, 410),
        Ok(s) => {
            let mut s = s.boxed();
            let mut replayed = Vec::new();
            while replayed.len() < 3 {
                match tokio::time::timeout(WAIT, s.next())
                    .await
                    .expect("event in time")
                {
                    Some(Ok(WatchEvent::Error(e))) => {
                        assert_eq!(e.code, 410, "{e:?}");
                        break;
                    }
                    Some(Ok(WatchEvent::Added(c))) if c.metadata.name.as_deref() == Some("cfg") => {
                        replayed.push("ADDED")
                    }
                    Some(Ok(WatchEvent::Modified(c)))
                        if c.metadata.name.as_deref() == Some("cfg") =>
                    {
                        replayed.push("MODIFIED")
                    }
                    Some(Ok(WatchEvent::Deleted(c)))
                        if c.metadata.name.as_deref() == Some("cfg") =>
                    {
                        replayed.push("DELETED")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("watch from 1 ended early: {other:?}"),
                }
            }
            assert!(
                replayed.is_empty() || replayed == ["ADDED", "MODIFIED", "DELETED"],
                "{replayed:?}"
            );
        }
    }
    ns.delete().await;
}

#[tokio::test]
async fn runtime_watcher_sees_objects_with_selectors() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("watcher").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    apply_json(&api, "before", "tendril-test", &cm("before", json!({})))
        .await
        .unwrap();
    let cfg = watcher::Config::default().fields("metadata.name=target");
    let mut objects = watcher(api.clone(), cfg).applied_objects().boxed();
    apply_json(&api, "noise", "tendril-test", &cm("noise", json!({})))
        .await
        .unwrap();
    apply_json(
        &api,
        "target",
        "tendril-test",
        &cm("target", json!({"x": "y"})),
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, objects.try_next())
        .await
        .expect("watcher event in time")
        .unwrap()
        .expect("an object");
    assert_eq!(got.metadata.name.as_deref(), Some("target"));

    // Streaming lists (sendInitialEvents) deliver the existing objects first.
    let mut streamed = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    // The namespace also holds what the cluster puts there (kube-root-ca.crt).
    let mut names = Vec::new();
    while !["before", "noise", "target"]
        .iter()
        .all(|n| names.iter().any(|m: &String| m == n))
    {
        let o = tokio::time::timeout(WAIT, streamed.try_next())
            .await
            .expect("streamed object in time")
            .unwrap()
            .expect("an object");
        names.push(o.metadata.name.unwrap());
    }
    ns.delete().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("final").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let mut body = cm("held", json!({}));
    body["metadata"]["finalizers"] = json!(["tendril.dev/hold"]);
    apply_json(&api, "held", "tendril-test", &body)
        .await
        .unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let uid = held.metadata.uid.clone().unwrap();
    let gone = await_condition(api.clone(), "held", conditions::is_deleted(&uid));
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("deleted in time")
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn owner_references_garbage_collect_dependents() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("gc").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let owner = apply_json(&api, "owner", "tendril-test", &cm("owner", json!({})))
        .await
        .unwrap();
    let mut child = cm("child", json!({}));
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "owner", "uid": owner["metadata"]["uid"]}]);
    let child = apply_json(&api, "child", "tendril-test", &child)
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let child_uid = child["metadata"]["uid"].as_str().unwrap().to_owned();
    let gone = await_condition(api.clone(), "child", conditions::is_deleted(&child_uid));
    tokio::time::timeout(Duration::from_secs(120), gone)
        .await
        .expect("child collected")
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn metadata_only_list_and_get() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("meta").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let mut body = cm("m", json!({"big": "value"}));
    body["metadata"]["labels"] = json!({"k": "v"});
    apply_json(&api, "m", "tendril-test", &body).await.unwrap();
    let list = api
        .list_metadata(&ListParams::default().labels("k=v"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));
    let one = api.get_metadata("m").await.unwrap();
    assert_eq!(one.metadata.labels.unwrap()["k"], "v");
    ns.delete().await;
}

#[tokio::test]
async fn kubeconfig_file_reaches_the_cluster() {
    let cluster = e2e::cluster().await;
    let kc = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));
}

#[tokio::test]
async fn list_items_are_merged_by_key_between_managers() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("lists").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    apply_json(&api, "web", "owner", &deployment("web", "web", "nginx:1"))
        .await
        .unwrap();
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1"}]}}}});
    let v = apply_json(&api, "web", "sidecar", &sidecar).await.unwrap();
    let names = |v: &Value| -> Vec<String> {
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut n = names(&v);
    n.sort();
    assert_eq!(n, ["main", "side"]);
    let owned = fields_of(&v, "sidecar");
    assert!(
        owned["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"side\"}"]
            .is_object(),
        "{owned}"
    );
    // The owner re-applies its own configuration: the sidecar stays.
    let v = apply_json(&api, "web", "owner", &deployment("web", "web", "nginx:2"))
        .await
        .unwrap();
    assert_eq!(names(&v).len(), 2);
    // The sidecar manager stops applying its container: it goes.
    let none = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let v = apply_json(&api, "web", "sidecar", &none).await.unwrap();
    assert_eq!(names(&v), ["main"]);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    ns.delete().await;
}

#[tokio::test]
async fn updates_patches_and_optimistic_concurrency() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("upd").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("c", json!({"a": "1"}))).unwrap(),
        )
        .await
        .unwrap();
    let mut stale = created.clone();
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "2"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("a".to_owned(), "9".to_owned())].into());
    let s = api_err(
        api.replace("c", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));

    // JSON patch (RFC 6902), sent as a raw request.
    let ops = json!([
        {"op": "replace", "path": "/data/a", "value": "3"},
        {"op": "remove", "path": "/data/b"}
    ]);
    let req = http::Request::patch(format!("/api/v1/namespaces/{}/configmaps/c", ns.name()))
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let v: ConfigMap = cluster.client().request(req).await.unwrap();
    assert_eq!(v.data.unwrap(), [("a".to_owned(), "3".to_owned())].into());

    let deploys: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    apply_json(
        &deploys,
        "web",
        "tendril-test",
        &deployment("web", "web", "nginx:1"),
    )
    .await
    .unwrap();
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}});
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(strategic))
        .await
        .unwrap();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(v["metadata"]["generation"], 2);
    // The apply manager now conflicts on the image another manager changed.
    let s = api_err(
        apply_json(
            &deploys,
            "web",
            "tendril-test",
            &deployment("web", "web", "nginx:1"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 409);
    assert!(s.message.contains("image"), "{}", s.message);
    ns.delete().await;
}

#[tokio::test]
async fn pod_status_is_set_through_the_status_subresource() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("pod").await;
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), ns.name());
    // Bound to a node that does not exist, so no kubelet ever touches it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "tendril-no-such-node", "containers": [{"name": "c", "image": "busybox:1"}]}});
    apply_json(&api, "p", "tendril-test", &pod).await.unwrap();
    let status = json!({"apiVersion": "v1", "kind": "Pod", "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "busybox:1",
            "imageID": "", "state": {"running": {}}}]
    }});
    let p = api
        .patch_status(
            "p",
            &PatchParams::apply("test-kubelet").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(
        st.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    // The test kubelet changes only the Ready condition; PodScheduled stays.
    let not_ready = json!({"apiVersion": "v1", "kind": "Pod", "status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}});
    let p = api
        .patch_status(
            "p",
            &PatchParams::apply("test-probe").force(),
            &Patch::Apply(&not_ready),
        )
        .await
        .unwrap();
    let conds = p.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    ns.delete().await;
}

#[tokio::test]
async fn secret_string_data_is_stored_as_base64_data() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("secret").await;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cluster.client(), ns.name());
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"password": "hunter2"}});
    let s = api
        .patch(
            "s",
            &PatchParams::apply("tendril-test"),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    assert!(s.string_data.is_none());
    assert_eq!(s.data.unwrap()["password"].0, b"hunter2");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    ns.delete().await;
}

#[tokio::test]
async fn immutable_config_map_rejects_data_changes() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("immcm").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let mut body = cm("frozen", json!({"a": "1"}));
    body["immutable"] = json!(true);
    apply_json(&api, "frozen", "tendril-test", &body)
        .await
        .unwrap();
    body["data"]["a"] = json!("2");
    let s = api_err(
        apply_json(&api, "frozen", "tendril-test", &body)
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("immutable"), "{}", s.message);
    ns.delete().await;
}

async fn established_crd(client: &kube::Client, status_subresource: bool) -> (String, ApiResource) {
    let group = format!("{}.tendril.dev", e2e::unique_name("g"));
    let name = format!("gadgets.{group}");
    let mut version = json!({"name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    if status_subresource {
        version["subresources"] = json!({"status": {}});
    }
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": group, "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [version]}
    });
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("tendril-test"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(WAIT, established)
        .await
        .expect("CRD established")
        .unwrap();
    let gvk = GroupVersionKind::gvk(&group, "v1", "Gadget");
    (name, ApiResource::from_gvk_with_plural(&gvk, "gadgets"))
}

#[tokio::test]
async fn custom_resource_generation_without_status_subresource_counts_status() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let (crd_name, ar) = established_crd(&client, false).await;
    // Wait until the new resource is served (discovery can lag Established on a real cluster).
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let g = json!({"apiVersion": ar.api_version, "kind": "Gadget", "metadata": {"name": e2e::unique_name("g")},
        "spec": {"n": 1}});
    let name = g["metadata"]["name"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let created = loop {
        match api
            .patch(
                &name,
                &PatchParams::apply("tendril-test"),
                &Patch::Apply(&g),
            )
            .await
        {
            Ok(o) => break o,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("custom resource not served: {e}"),
        }
    };
    assert_eq!(created.metadata.generation, Some(1));
    let mut with_status = g.clone();
    with_status["status"] = json!({"phase": "Ready"});
    let v = api
        .patch(
            &name,
            &PatchParams::apply("tendril-test"),
            &Patch::Apply(&with_status),
        )
        .await
        .unwrap();
    assert_eq!(v.data["status"]["phase"], "Ready");
    assert_eq!(
        v.metadata.generation,
        Some(2),
        "without a status subresource, status is part of the object"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Server-only: the CRD establish delay option (a real cluster has its own timing).
#[tokio::test]
async fn test_server_serves_custom_resources_only_once_established() {
    use tendril_testkit::apiserver::{ApiServer, Options};
    let server = ApiServer::start_with(Options {
        crd_establish_delay: Duration::from_millis(300),
        ..Options::default()
    });
    let client = server.client();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.slow.tendril.dev"},
        "spec": {"group": "slow.tendril.dev", "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}
    });
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds
        .patch(
            "things.slow.tendril.dev",
            &PatchParams::apply("t"),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    assert!(
        created
            .status
            .is_none_or(|s| s.conditions.is_none_or(|c| c.is_empty()))
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("slow.tendril.dev", "v1", "Thing"),
        "things",
    );
    let things: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let thing =
        json!({"apiVersion": "slow.tendril.dev/v1", "kind": "Thing", "metadata": {"name": "a"}});
    let early = things
        .patch("a", &PatchParams::apply("t"), &Patch::Apply(&thing))
        .await;
    assert_eq!(api_err(early.unwrap_err()).code, 404);
    let established = await_condition(
        crds,
        "things.slow.tendril.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .expect("established")
        .unwrap();
    things
        .patch("a", &PatchParams::apply("t"), &Patch::Apply(&thing))
        .await
        .unwrap();
}

#[tokio::test]
async fn validation_of_names_selectors_pods_and_protected_namespaces() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("valid").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let s = api_err(
        apply_json(&api, "Bad_Name", "tendril-test", &cm("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("metadata.name"), "{}", s.message);

    let mut bad_label = cm("labelled", json!({}));
    bad_label["metadata"]["labels"] = json!({"tendril.dev/ok": "fine", "app": "no spaces allowed"});
    let s = api_err(
        apply_json(&api, "labelled", "tendril-test", &bad_label)
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("metadata.labels"), "{}", s.message);

    let s = api_err(
        api.list(&ListParams::default().fields("data.a=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 400);
    assert!(
        s.message.contains("field label not supported"),
        "{}",
        s.message
    );

    // RBAC names may contain colons.
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), ns.name());
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tendril:reader"}, "rules": []});
    roles
        .patch(
            "tendril:reader",
            &PatchParams::apply("tendril-test"),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();

    // A Pod's spec is immutable but for images and a few fields.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns.name());
    let pod = |image: &str, cmd: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "tendril-no-such-node",
                     "containers": [{"name": "c", "image": image, "command": [cmd]}]}})
    };
    apply_json(&pods, "p", "tendril-test", &pod("busybox:1", "sleep"))
        .await
        .unwrap();
    apply_json(&pods, "p", "tendril-test", &pod("busybox:2", "sleep"))
        .await
        .unwrap();
    let s = api_err(
        apply_json(&pods, "p", "tendril-test", &pod("busybox:2", "true"))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("pod updates may not change fields"),
        "{}",
        s.message
    );

    // The default namespace cannot be deleted (asked as a dry run, to be safe on real clusters).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let s = api_err(
        namespaces
            .delete(
                "default",
                &DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    ns.delete().await;
}

#[tokio::test]
async fn delete_options_dry_run_preconditions_and_orphans() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("delopts").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let owner = apply_json(&api, "owner", "tendril-test", &cm("owner", json!({})))
        .await
        .unwrap();

    // Dry run: answered, nothing deleted.
    api.delete(
        "owner",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get("owner").await.is_ok());

    // A UID precondition that does not hold: 409 Conflict, nothing deleted.
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let s = api_err(api.delete("owner", &wrong).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(s.message.contains("Precondition"), "{}", s.message);
    assert!(api.get("owner").await.is_ok());

    // Orphan propagation: the dependent stays and loses its owner reference.
    let mut child = cm("child", json!({}));
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "owner", "uid": owner["metadata"]["uid"]}]);
    apply_json(&api, "child", "tendril-test", &child)
        .await
        .unwrap();
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: owner["metadata"]["uid"].as_str().map(str::to_owned),
            resource_version: None,
        }),
        ..DeleteParams::orphan()
    };
    api.delete("owner", &right).await.unwrap();
    let owner_uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
    let gone = await_condition(api.clone(), "owner", conditions::is_deleted(&owner_uid));
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("owner deleted")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let c = api.get("child").await.expect("the orphan stays");
        if c.metadata.owner_references.is_none_or(|r| r.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "owner reference never removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn wrongly_typed_fields_are_rejected() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("types").await;
    let ar = ApiResource::erase::<Deployment>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns.name(), &ar);
    let mut body = deployment("typed", "typed", "nginx");
    body["spec"]["replicas"] = json!("2");
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    let s = api_err(api.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("replicas"), "{}", s.message);
    ns.delete().await;
}

#[tokio::test]
async fn custom_resources_are_validated_against_the_crd_schema() {
    let cluster = e2e::cluster().await;
    let client = cluster.client();
    let group = format!("{}.tendril.dev", e2e::unique_name("s"));
    let name = format!("sprockets.{group}");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": group, "scope": "Cluster",
            "names": {"plural": "sprockets", "singular": "sprocket", "kind": "Sprocket"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["teeth"], "properties": {
                        "teeth": {"type": "integer"},
                        "finish": {"type": "string", "enum": ["matte", "gloss"]}}}}}}}]}
    });
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("tendril-test"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
    tokio::time::timeout(WAIT, established)
        .await
        .expect("established")
        .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Sprocket"),
        "sprockets",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let sprocket = |spec: Value| {
        json!({"apiVersion": format!("{group}/v1"), "kind": "Sprocket",
               "metadata": {"name": "s1"}, "spec": spec})
    };
    // Serving can lag Established on a real cluster: retry the valid one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ok = api
            .patch(
                "s1",
                &PatchParams::apply("tendril-test"),
                &Patch::Apply(sprocket(json!({"teeth": 12, "finish": "matte"}))),
            )
            .await;
        match ok {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("valid sprocket rejected: {e}"),
        }
    }
    for (spec, field) in [
        (json!({"teeth": "twelve"}), "spec.teeth"),
        (json!({"teeth": 12, "finish": "rusty"}), "spec.finish"),
        (json!({"finish": "matte"}), "spec.teeth"),
    ] {
        let err = api
            .patch(
                "s1",
                &PatchParams::apply("tendril-test"),
                &Patch::Apply(sprocket(spec)),
            )
            .await
            .unwrap_err();
        let s = api_err(err);
        assert_eq!(
            (s.code, s.reason.as_str()),
            (422, "Invalid"),
            "{}",
            s.message
        );
        assert!(s.message.contains(field), "{}", s.message);
    }
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("foreground").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let owner = apply_json(&api, "owner", "tendril-test", &cm("owner", json!({})))
        .await
        .unwrap();
    let mut child = cm("child", json!({}));
    child["metadata"]["finalizers"] = json!(["tendril.dev/hold"]);
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "owner", "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true}]);
    apply_json(&api, "child", "tendril-test", &child)
        .await
        .unwrap();

    // The answer is the owner, marked, with the garbage collector's finalizer.
    let answer = api
        .delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = answer.left().expect("the object, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    // The garbage collector deletes the child; its finalizer holds it, and
    // the owner waits for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while api
        .get("child")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "child never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = api
        .get("owner")
        .await
        .expect("the owner waits for its child");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    // Once the child goes, so does the owner.
    api.patch(
        "child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let owner_uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
    let gone = await_condition(api.clone(), "owner", conditions::is_deleted(&owner_uid));
    tokio::time::timeout(Duration::from_secs(120), gone)
        .await
        .expect("owner deleted after its child")
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn no_finalizer_can_be_added_to_an_object_being_deleted() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("nonewfin").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let mut body = cm("held", json!({}));
    body["metadata"]["finalizers"] = json!(["tendril.dev/a"]);
    apply_json(&api, "held", "tendril-test", &body)
        .await
        .unwrap();
    let answer = api.delete("held", &DeleteParams::default()).await.unwrap();
    assert!(answer.left().is_some(), "held by a finalizer: the object");
    let s = api_err(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["tendril.dev/a", "tendril.dev/b"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"),
        "{}",
        s.message
    );
    // removing the last one lets it go
    let held = api.get("held").await.unwrap();
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let uid = held.metadata.uid.unwrap();
    let gone = await_condition(api.clone(), "held", conditions::is_deleted(&uid));
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("deleted")
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn a_delete_answers_the_object_or_a_status_by_kind() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("delanswer").await;
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    apply_json(&services, "web", "tendril-test", &svc)
        .await
        .unwrap();
    // Services (like Pods, PVCs and PVs) return the deleted object...
    let answer = services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        answer.is_left(),
        "a Service delete answers the Service: {answer:?}"
    );
    // ...ConfigMaps a Status.
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    apply_json(&cms, "a", "tendril-test", &cm("a", json!({})))
        .await
        .unwrap();
    let answer = cms.delete("a", &DeleteParams::default()).await.unwrap();
    let status = answer.right().expect("a ConfigMap delete answers a Status");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    ns.delete().await;
}
