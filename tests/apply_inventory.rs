//! The ApplySet inventory: re-applies send only what changed, drift made by
//! someone else is noticed, pruning removes what a newer bundle drops and
//! never anything outside the set.

mod apply_common;

use apply_common::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tendril::apply::inventory::{
    GROUP_KINDS_ANNOTATION, ID_LABEL, PART_OF_LABEL, TOOLING_ANNOTATION,
};
use tendril::apply::{Action, ApplySet, ObjectError};
use tendril_testkit::e2e;

fn cms(names: &[(&str, &str)]) -> String {
    names
        .iter()
        .map(|(name, value)| {
            format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: \"{value}\"\n  keep: \"yes\"\n")
        })
        .collect()
}

#[tokio::test]
async fn the_parent_and_members_carry_the_applyset_labels() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("inv-labels").await;
    let set = in_applyset(opts(), "labels", ns.name());
    apply(&cluster, ns.name(), cms(&[("a", "1")]), &set)
        .await
        .expect("applies");
    let id = ApplySet::new("labels", ns.name()).unwrap().id();
    let secrets = api(&cluster, "v1", "Secret", "secrets", Some(ns.name()));
    let parent = get(&secrets, "labels")
        .await
        .expect("the parent Secret exists");
    assert_eq!(parent["metadata"]["labels"][ID_LABEL], id);
    assert_eq!(
        parent["metadata"]["annotations"][GROUP_KINDS_ANNOTATION],
        "ConfigMap"
    );
    assert!(
        parent["metadata"]["annotations"][TOOLING_ANNOTATION]
            .as_str()
            .is_some_and(|t| t.starts_with("tendril/")),
        "{parent}"
    );
    let member = get(
        &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
        "a",
    )
    .await
    .unwrap();
    assert_eq!(member["metadata"]["labels"][PART_OF_LABEL], id);
    ns.delete().await;
}

#[tokio::test]
async fn an_upgrade_that_drops_an_object_prunes_it() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("inv-prune").await;
    let set = in_applyset(opts(), "upgrade", ns.name());
    let configmaps = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    apply(&cluster, ns.name(), cms(&[("a", "1"), ("b", "1")]), &set)
        .await
        .expect("first version");
    let report = apply(&cluster, ns.name(), cms(&[("a", "1")]), &set)
        .await
        .expect("second version");
    assert_eq!(result(&report, "ConfigMap", "a").action, Action::Unchanged);
    assert_eq!(result(&report, "ConfigMap", "b").action, Action::Pruned);
    assert!(get(&configmaps, "b").await.is_none(), "b was deleted");
    assert!(get(&configmaps, "a").await.is_some());
    // Pruned once: a third apply has nothing left to prune.
    let again = apply(&cluster, ns.name(), cms(&[("a", "1")]), &set)
        .await
        .expect("third apply");
    assert_eq!(again.count(Action::Pruned), 0);
    assert_eq!(again.objects.len(), 1);
    ns.delete().await;
}

#[tokio::test]
async fn an_object_of_the_same_name_outside_the_set_is_left_alone() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("inv-foreign").await;
    let configmaps = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    let one = in_applyset(opts(), "one", ns.name());
    let two = in_applyset(opts(), "two", ns.name());
    apply(&cluster, ns.name(), cms(&[("x", "1"), ("w", "1")]), &one)
        .await
        .unwrap();
    apply(&cluster, ns.name(), cms(&[("other", "1")]), &two)
        .await
        .unwrap();
    // Someone replaces x with their own ConfigMap of the same name, outside every set.
    configmaps
        .delete("x", &DeleteParams::default())
        .await
        .unwrap();
    apply_as(
        &configmaps,
        "someone-else",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": ns.name()}, "data": {"theirs": "1"}}),
    )
    .await;
    // Set one drops x: their x is not a member, so it is not pruned.
    let report = apply(&cluster, ns.name(), cms(&[("w", "1")]), &one)
        .await
        .unwrap();
    assert_eq!(report.count(Action::Pruned), 0, "{report:?}");
    assert_eq!(get(&configmaps, "x").await.unwrap()["data"]["theirs"], "1");
    assert!(
        get(&configmaps, "other").await.is_some(),
        "another set's member stays"
    );
    ns.delete().await;
}

#[tokio::test]
async fn drift_behind_tendrils_back_is_noticed_and_corrected() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("inv-drift").await;
    let configmaps = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    let set = in_applyset(opts(), "drift", ns.name());
    let yaml = cms(&[("a", "1"), ("b", "1"), ("c", "1")]);
    apply(&cluster, ns.name(), &yaml, &set).await.unwrap();

    // A status-like change by someone else that touches no field tendril owns.
    configmaps
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "hi"}}})),
        )
        .await
        .unwrap();
    // Someone removes a key tendril owns from a, and deletes b.
    configmaps
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null}})),
        )
        .await
        .unwrap();
    configmaps
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();

    let report = apply(&cluster, ns.name(), &yaml, &set).await.unwrap();
    assert_eq!(result(&report, "ConfigMap", "a").action, Action::Configured);
    assert_eq!(result(&report, "ConfigMap", "b").action, Action::Created);
    assert_eq!(
        result(&report, "ConfigMap", "c").action,
        Action::Unchanged,
        "a change to fields tendril does not own is not drift"
    );
    assert_eq!(get(&configmaps, "a").await.unwrap()["data"]["k"], "1");
    assert_eq!(get(&configmaps, "b").await.unwrap()["data"]["k"], "1");

    // Someone takes a field over with another value: tendril notices and
    // reports the conflict; forcing corrects it.
    configmaps
        .patch("c", &PatchParams::apply("ops-console").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "theirs"}})))
        .await
        .unwrap();
    let err = apply(&cluster, ns.name(), &yaml, &set).await.unwrap_err();
    let c = result(err.report().unwrap(), "ConfigMap", "c");
    assert!(
        matches!(c.error, Some(ObjectError::Conflict { .. })),
        "{c:?}"
    );
    let mut forced = set.clone();
    forced.force_conflicts = true;
    let report = apply(&cluster, ns.name(), &yaml, &forced).await.unwrap();
    assert_eq!(result(&report, "ConfigMap", "c").action, Action::Configured);
    assert_eq!(get(&configmaps, "c").await.unwrap()["data"]["k"], "1");
    ns.delete().await;
}
