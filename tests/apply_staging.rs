//! Staging: kinds resolved from CRDs in the same bundle, namespaces first,
//! `tendril.dev/depends-on`, unknown kinds, concurrent waves.

mod apply_common;

use apply_common::*;
use serde_json::json;
use tendril::apply::{Action, ApplyError, ApplyEvent, Status};
use tendril_testkit::e2e;

#[tokio::test]
async fn custom_resource_in_the_same_bundle_as_its_crd() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-crd").await;
    let group = format!("{}.tendril.test", unique("g"));
    // The CR comes first in the file: ordering must not depend on file order.
    let yaml = format!(
        "apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n---\n{}",
        crd_yaml(&group, "Gadget", "gadgets", "Namespaced")
    );
    let report = apply(&cluster, ns.name(), &yaml, &opts())
        .await
        .expect("bundle applies");
    let crd = result(
        &report,
        "CustomResourceDefinition",
        &format!("gadgets.{group}"),
    );
    let cr = result(&report, "Gadget", "g1");
    assert_eq!(crd.action, Action::Created);
    assert_eq!(cr.action, Action::Created);
    assert!(
        cr.wave > crd.wave,
        "CR wave {} must follow CRD wave {}",
        cr.wave,
        crd.wave
    );
    assert_eq!(
        crd.status,
        Status::Ready,
        "the CRD gate waited for Established"
    );
    assert_eq!(
        cr.object.namespace.as_deref(),
        Some(ns.name()),
        "namespace filled in"
    );

    let live = get(
        &api(
            &cluster,
            &format!("{group}/v1"),
            "Gadget",
            "gadgets",
            Some(ns.name()),
        ),
        "g1",
    )
    .await
    .expect("the custom resource exists");
    assert_eq!(live["spec"]["size"], 3);

    // Recorded in an apply set, a second apply of the same bundle changes nothing.
    let set = in_applyset(opts(), "gadgets", ns.name());
    apply(&cluster, ns.name(), &yaml, &set)
        .await
        .expect("apply into the set");
    let again = apply(&cluster, ns.name(), &yaml, &set)
        .await
        .expect("re-apply");
    assert_eq!(result(&again, "Gadget", "g1").action, Action::Unchanged);
    assert_eq!(
        result(
            &again,
            "CustomResourceDefinition",
            &format!("gadgets.{group}")
        )
        .action,
        Action::Unchanged
    );
    delete_cluster_object(
        &cluster,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &format!("gadgets.{group}"),
    )
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn namespace_in_the_bundle_comes_first() {
    let cluster = e2e::cluster().await;
    let name = unique("apply-nsb");
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: {name}\ndata:\n  k: v\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n  namespace: {name}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    );
    let report = apply(&cluster, "default", &yaml, &opts())
        .await
        .expect("applies");
    let ns = result(&report, "Namespace", &name);
    assert_eq!(ns.action, Action::Created);
    assert_eq!(ns.status, Status::Ready);
    assert!(result(&report, "ConfigMap", "c").wave > ns.wave);
    assert!(result(&report, "ServiceAccount", "sa").wave > ns.wave);
    let cm = get(
        &api(&cluster, "v1", "ConfigMap", "configmaps", Some(&name)),
        "c",
    )
    .await
    .expect("cm exists");
    assert_eq!(cm["data"]["k"], "v");
    delete_cluster_object(&cluster, "v1", "Namespace", "namespaces", &name).await;
}

#[tokio::test]
async fn unknown_kind_names_kind_and_file() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-unknown").await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: nothere.tendril.test/v1\nkind: Phantom\nmetadata:\n  name: p\n";
    let err = apply(&cluster, ns.name(), yaml, &opts()).await.unwrap_err();
    assert!(matches!(err, ApplyError::UnknownKind { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Phantom") && text.contains("test.yaml#2"),
        "{text}"
    );
    // Nothing was applied: resolution happens before any write.
    assert!(
        get(
            &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
            "ok"
        )
        .await
        .is_none()
    );
    ns.delete().await;
}

#[tokio::test]
async fn depends_on_waits_for_the_named_object_to_be_ready() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-dep").await;
    let n = ns.name().to_string();
    // `after` names the Deployment; the Deployment must be ready before `after` is applied.
    let yaml = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: after
  annotations:
    tendril.dev/depends-on: "Deployment.apps/{n}/backend"
data: {{k: v}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
spec:
  replicas: 1
  selector: {{matchLabels: {{app: backend}}}}
  template:
    metadata: {{labels: {{app: backend}}}}
    spec:
      containers:
      - name: pause
        image: registry.k8s.io/pause:3.10
"#
    );
    let deployments = api(&cluster, "apps/v1", "Deployment", "deployments", Some(&n));
    let configmaps = api(&cluster, "v1", "ConfigMap", "configmaps", Some(&n));
    let o = opts();
    let controller = async {
        let d = wait_exists(&deployments, "backend").await;
        // While the Deployment is not ready, the dependent must not exist yet.
        let early = get(&configmaps, "after").await.is_some();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let still_early = get(&configmaps, "after").await.is_some();
        let generation = d["metadata"]["generation"].as_i64().unwrap();
        simulate_status(&cluster, &deployments, "backend", json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})).await;
        (early, still_early)
    };
    let (report, (early, still_early)) = tokio::join!(apply(&cluster, &n, &yaml, &o), controller);
    let report = report.expect("applies once the deployment is ready");
    assert!(
        !early && !still_early,
        "the dependent was applied before the Deployment was ready"
    );
    let dep = result(&report, "Deployment", "backend");
    let after = result(&report, "ConfigMap", "after");
    assert!(after.wave > dep.wave);
    assert_eq!(dep.status, Status::Ready);
    assert!(get(&configmaps, "after").await.is_some());
    ns.delete().await;
}

#[tokio::test]
async fn a_wave_is_applied_concurrently_and_completely() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-many").await;
    let mut yaml = String::new();
    for i in 0..40 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  i: \"{i}\"\n"
        ));
    }
    let mut o = in_applyset(opts(), "many", ns.name());
    o.concurrency = 8;
    let (report, events) = apply_with_events(&cluster, ns.name(), &yaml, &o).await;
    let report = report.expect("applies");
    assert_eq!(report.objects.len(), 40);
    assert!(
        matches!(
            events.first(),
            Some(ApplyEvent::Planned {
                objects: 40,
                waves: 1
            })
        ),
        "{events:?}"
    );
    let applied = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ApplyEvent::Applied {
                    action: Action::Created,
                    ..
                }
            )
        })
        .count();
    assert_eq!(applied, 40, "one progress event per object");
    assert_eq!(report.count(Action::Created), 40);
    assert_eq!(report.waves, 1);
    let cms = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    let list = cms.list(&Default::default()).await.unwrap();
    let ours = list
        .items
        .iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("cm-"))
        })
        .count();
    assert_eq!(ours, 40);
    let again = apply(&cluster, ns.name(), &yaml, &o)
        .await
        .expect("re-applies");
    assert_eq!(again.count(Action::Unchanged), 40);
    ns.delete().await;
}

#[tokio::test]
async fn a_failure_skips_what_waits_for_it() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-stop").await;
    let cms = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    // Another manager owns data.k: our different value conflicts; the
    // Deployment waits for the ConfigMap, so it is not applied.
    apply_as(&cms, "someone-else", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": ns.name()}, "data": {"k": "theirs"}})).await;
    let yaml = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: owned}
data: {k: ours}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: later
  annotations: {tendril.dev/depends-on: ConfigMap/owned}
spec:
  replicas: 0
  selector: {matchLabels: {app: later}}
  template:
    metadata: {labels: {app: later}}
    spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}
"#;
    let err = apply(&cluster, ns.name(), yaml, &opts()).await.unwrap_err();
    let report = err.report().expect("report on failure").clone();
    assert_eq!(result(&report, "ConfigMap", "owned").action, Action::Failed);
    assert_eq!(
        result(&report, "Deployment", "later").action,
        Action::Skipped
    );
    assert!(err.to_string().contains("ConfigMap/"), "{err}");
    assert!(
        get(
            &api(
                &cluster,
                "apps/v1",
                "Deployment",
                "deployments",
                Some(ns.name())
            ),
            "later"
        )
        .await
        .is_none()
    );
    ns.delete().await;
}

#[tokio::test]
async fn discovery_cache_is_refreshed_after_a_new_crd_is_established() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-disc").await;
    let group = format!("{}.tendril.test", unique("d"));
    let rm = tendril::apply::ResourceManager::new(cluster.client(), ns.name());
    let sink = |_e: tendril::apply::ApplyEvent| {};
    let cr = format!("apiVersion: {group}/v1\nkind: Doohickey\nmetadata:\n  name: d1\n");
    // Not served yet: unknown.
    let err = rm.apply(manifests(&cr), &opts(), &sink).await.unwrap_err();
    assert!(matches!(err, ApplyError::UnknownKind { .. }), "{err}");
    // The CRD alone, through the same manager.
    let crd = crd_yaml(&group, "Doohickey", "doohickeys", "Namespaced");
    let mut wait = opts();
    wait.wait = true; // until Established
    rm.apply(manifests(&crd), &wait, &sink)
        .await
        .expect("crd applies");
    // Now the custom resource alone resolves through (refreshed) discovery.
    let report = rm
        .apply(manifests(&cr), &opts(), &sink)
        .await
        .expect("cr applies");
    assert_eq!(result(&report, "Doohickey", "d1").action, Action::Created);
    ns.delete().await;
    delete_cluster_object(
        &cluster,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &format!("doohickeys.{group}"),
    )
    .await;
}
