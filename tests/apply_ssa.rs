//! Server-side apply semantics: created / configured / unchanged, field
//! manager, conflicts and forcing, dry run, immutable fields.

mod apply_common;

use apply_common::*;
use serde_json::json;
use tendril::apply::{Action, ApplyError, FieldConflict};
use tendril_testkit::e2e;

fn cm(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: {value}\n"
    )
}

#[tokio::test]
async fn created_configured_unchanged() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-ccu").await;
    let set = in_applyset(opts(), "ccu", ns.name());
    let first = apply(&cluster, ns.name(), &cm("a"), &set).await.unwrap();
    assert_eq!(
        result(&first, "ConfigMap", "settings").action,
        Action::Created
    );
    let same = apply(&cluster, ns.name(), &cm("a"), &set).await.unwrap();
    assert_eq!(
        result(&same, "ConfigMap", "settings").action,
        Action::Unchanged
    );
    // Without an inventory nothing is read before the write: an existing
    // object that was applied is `configured`.
    let plain = apply(&cluster, ns.name(), &cm("a"), &opts()).await.unwrap();
    assert_eq!(
        result(&plain, "ConfigMap", "settings").action,
        Action::Configured
    );
    let changed = apply(&cluster, ns.name(), &cm("b"), &set).await.unwrap();
    assert_eq!(
        result(&changed, "ConfigMap", "settings").action,
        Action::Configured
    );

    let live = get(
        &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
        "settings",
    )
    .await
    .unwrap();
    assert_eq!(live["data"]["mode"], "b");
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["operation"] == "Apply")
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        managers,
        vec!["tendril"],
        "applied with field manager tendril"
    );
    ns.delete().await;
}

#[tokio::test]
async fn custom_field_manager() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-fm").await;
    let mut o = opts();
    o.field_manager = "platform-team".into();
    apply(&cluster, ns.name(), &cm("a"), &o).await.unwrap();
    let live = get(
        &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
        "settings",
    )
    .await
    .unwrap();
    assert!(
        live["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "platform-team"),
        "{live}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn conflict_names_the_other_manager_and_fields_and_force_takes_over() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-conflict").await;
    let cms = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    apply_as(&cms, "ops-console", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns.name()}, "data": {"mode": "manual"}})).await;

    let err = apply(&cluster, ns.name(), &cm("auto"), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::Failed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("ops-console") && text.contains(".data.mode"),
        "{text}"
    );
    assert!(
        !text.contains("--"),
        "the library names no CLI flag: {text}"
    );
    let report = err.report().unwrap();
    let r = result(report, "ConfigMap", "settings");
    assert_eq!(r.action, Action::Failed);
    assert!(matches!(
        r.error,
        Some(tendril::apply::ObjectError::Conflict { .. })
    ));
    assert_eq!(
        r.conflicts,
        vec![FieldConflict {
            manager: "ops-console".into(),
            fields: vec![".data.mode".into()]
        }]
    );
    assert_eq!(
        get(&cms, "settings").await.unwrap()["data"]["mode"],
        "manual",
        "nothing changed"
    );

    // Dry run with force: reports what forcing would take over, changes nothing.
    let mut dry = opts();
    dry.dry_run = true;
    dry.force_conflicts = true;
    let report = apply(&cluster, ns.name(), &cm("auto"), &dry).await.unwrap();
    let r = result(&report, "ConfigMap", "settings");
    assert_eq!(r.action, Action::Configured);
    assert_eq!(
        r.conflicts,
        vec![FieldConflict {
            manager: "ops-console".into(),
            fields: vec![".data.mode".into()]
        }]
    );
    assert_eq!(
        get(&cms, "settings").await.unwrap()["data"]["mode"],
        "manual",
        "dry run persisted nothing"
    );

    let mut force = opts();
    force.force_conflicts = true;
    let report = apply(&cluster, ns.name(), &cm("auto"), &force)
        .await
        .unwrap();
    assert_eq!(
        result(&report, "ConfigMap", "settings").action,
        Action::Configured
    );
    let live = get(&cms, "settings").await.unwrap();
    assert_eq!(live["data"]["mode"], "auto");
    ns.delete().await;
}

#[tokio::test]
async fn dry_run_reports_without_persisting() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-dry").await;
    let cms = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    let mut dry = opts();
    dry.dry_run = true;
    let report = apply(&cluster, ns.name(), &cm("a"), &dry).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(
        result(&report, "ConfigMap", "settings").action,
        Action::Created
    );
    assert!(
        get(&cms, "settings").await.is_none(),
        "dry run created nothing"
    );

    apply(&cluster, ns.name(), &cm("a"), &opts()).await.unwrap();
    let rv = get(&cms, "settings").await.unwrap()["metadata"]["resourceVersion"].clone();
    let report = apply(&cluster, ns.name(), &cm("a"), &dry).await.unwrap();
    assert_eq!(
        result(&report, "ConfigMap", "settings").action,
        Action::Unchanged
    );
    let report = apply(&cluster, ns.name(), &cm("b"), &dry).await.unwrap();
    assert_eq!(
        result(&report, "ConfigMap", "settings").action,
        Action::Configured
    );
    let live = get(&cms, "settings").await.unwrap();
    assert_eq!(live["data"]["mode"], "a");
    assert_eq!(live["metadata"]["resourceVersion"], rv);

    // Without force, a dry run reports the conflict as the real apply would.
    apply_as_forced(&cms, "ops-console", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns.name()}, "data": {"mode": "manual"}})).await;
    let err = apply(&cluster, ns.name(), &cm("auto"), &dry)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ops-console"), "{err}");
    ns.delete().await;
}

#[tokio::test]
async fn dry_run_of_a_bundle_that_creates_its_namespace() {
    let cluster = e2e::cluster().await;
    let name = unique("apply-drns");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: {name}\n"
    );
    let mut dry = opts();
    dry.dry_run = true;
    let report = apply(&cluster, "default", &yaml, &dry).await.unwrap();
    assert_eq!(result(&report, "Namespace", &name).action, Action::Created);
    let c = result(&report, "ConfigMap", "c");
    assert_eq!(c.action, Action::Created);
    assert!(
        c.note.as_deref().unwrap_or("").contains("not checked"),
        "{c:?}"
    );
    assert!(
        get(&api(&cluster, "v1", "Namespace", "namespaces", None), &name)
            .await
            .is_none()
    );
}

fn deployment(app_label: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: {app_label}}}}}
  template:
    metadata: {{labels: {{app: {app_label}}}}}
    spec: {{containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]}}
"#
    )
}

#[tokio::test]
async fn immutable_field_is_reported_plainly_and_recreate_is_opt_in() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("apply-immut").await;
    apply(&cluster, ns.name(), &deployment("one"), &opts())
        .await
        .unwrap();
    let deployments = api(
        &cluster,
        "apps/v1",
        "Deployment",
        "deployments",
        Some(ns.name()),
    );
    let uid = get(&deployments, "web").await.unwrap()["metadata"]["uid"].clone();

    let err = apply(&cluster, ns.name(), &deployment("two"), &opts())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("immutable") && !text.contains("--"), "{text}");
    assert!(matches!(
        result(err.report().unwrap(), "Deployment", "web").error,
        Some(tendril::apply::ObjectError::Immutable { .. })
    ));
    assert_eq!(
        get(&deployments, "web").await.unwrap()["metadata"]["uid"],
        uid
    );

    let mut o = opts();
    o.recreate_immutable = true;
    let report = apply(&cluster, ns.name(), &deployment("two"), &o)
        .await
        .unwrap();
    assert_eq!(
        result(&report, "Deployment", "web").action,
        Action::Recreated
    );
    let live = get(&deployments, "web").await.unwrap();
    assert_ne!(live["metadata"]["uid"], uid, "a new object");
    assert_eq!(live["spec"]["selector"]["matchLabels"]["app"], "two");
    ns.delete().await;
}
