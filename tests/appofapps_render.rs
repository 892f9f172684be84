//! The App of Apps rendered from the Terraform output samples of each cloud
//! (`fixtures/outputs/*.json`, read with the facts module), as insta
//! snapshots; and the per-component settings of the job.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use tendril::Secret;
use tendril::appofapps::{self, AppOfApps, AppOfAppsError, AppsSource, RepoCredentials};
use tendril::chart::{RenderedManifest, manifests_to_yaml};
use tendril::cloud::Provider;
use tendril::facts::{InfraFacts, OutputMapping};

fn facts(provider: Provider) -> InfraFacts {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/outputs")
        .join(format!("{}.json", provider.as_str()));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    InfraFacts::from_outputs(provider, &doc, &OutputMapping::defaults(provider))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn spec() -> AppOfApps {
    AppOfApps::new(
        "argocd",
        AppsSource::new("https://github.com/acme/shop-apps.git"),
    )
}

fn render(provider: Provider, spec: &AppOfApps) -> Vec<RenderedManifest> {
    appofapps::render(&facts(provider), spec).unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(manifests: &'a [RenderedManifest], kind: &str, name: &str) -> Option<&'a Value> {
    manifests
        .iter()
        .map(|m| m.object.as_ref())
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn names(manifests: &[RenderedManifest], kind: &str) -> Vec<String> {
    manifests
        .iter()
        .filter(|m| m.object["kind"] == kind)
        .map(|m| m.object["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn aws_snapshot() {
    let m = render(Provider::Aws, &spec());
    insta::assert_snapshot!("app_of_apps_aws", manifests_to_yaml(&m));
    // the facts reach the component charts as valuesObject
    let lbc = find(&m, "Application", "aws-load-balancer-controller").unwrap();
    let values = &lbc["spec"]["source"]["helm"]["valuesObject"];
    assert_eq!(values["clusterName"], "shop-prod");
    assert!(values["vpcId"].as_str().unwrap().starts_with("vpc-"));
    assert!(find(&m, "Application", "karpenter").is_some());
    assert_eq!(
        find(&m, "StorageClass", "gp3").unwrap()["provisioner"],
        "ebs.csi.aws.com"
    );
}

#[test]
fn gcp_snapshot() {
    let m = render(Provider::Gcp, &spec());
    insta::assert_snapshot!("app_of_apps_gcp", manifests_to_yaml(&m));
    let apps = names(&m, "Application");
    assert!(!apps.contains(&"karpenter".to_string()), "{apps:?}");
    assert!(
        !apps.contains(&"aws-load-balancer-controller".to_string()),
        "{apps:?}"
    );
    let dns = find(&m, "Application", "external-dns").unwrap();
    assert_eq!(
        dns["spec"]["source"]["helm"]["valuesObject"]["provider"]["name"],
        "google"
    );
    assert!(find(&m, "StorageClass", "balanced").is_some());
}

#[test]
fn azure_snapshot() {
    let m = render(Provider::Azure, &spec());
    insta::assert_snapshot!("app_of_apps_azure", manifests_to_yaml(&m));
    let dns = find(&m, "Application", "external-dns").unwrap();
    assert_eq!(
        dns["spec"]["source"]["helm"]["valuesObject"]["provider"]["name"],
        "azure"
    );
    assert_eq!(
        find(&m, "StorageClass", "premium-ssd").unwrap()["provisioner"],
        "disk.csi.azure.com"
    );
}

#[test]
fn root_project_and_sync_policy() {
    let m = render(Provider::Aws, &spec());
    let root = find(&m, "Application", "root").unwrap();
    assert_eq!(
        root["spec"]["source"]["repoURL"],
        "https://github.com/acme/shop-apps.git"
    );
    assert_eq!(root["spec"]["source"]["targetRevision"], "main");
    assert_eq!(root["spec"]["source"]["path"], "apps");
    assert!(find(&m, "AppProject", "platform").is_some());
    for o in m
        .iter()
        .map(|m| &m.object)
        .filter(|o| o["kind"] == "Application")
    {
        let policy = &o["spec"]["syncPolicy"];
        assert_eq!(
            policy["automated"],
            json!({"prune": true, "selfHeal": true}),
            "{}",
            o["metadata"]["name"]
        );
        assert!(
            policy["syncOptions"]
                .as_array()
                .unwrap()
                .contains(&json!("CreateNamespace=true"))
        );
        assert!(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"].is_string());
    }
    // no repository Secret without credentials
    assert!(names(&m, "Secret").is_empty());
}

#[test]
fn repository_secret_when_credentials_are_given() {
    let mut s = spec();
    s.apps.credentials = Some(RepoCredentials {
        username: "git".into(),
        password: Secret::new("ghp_tok3n".into()),
    });
    let m = render(Provider::Aws, &s);
    let secret = find(&m, "Secret", "root-repository").unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(
        secret["stringData"]["url"],
        "https://github.com/acme/shop-apps.git"
    );
    assert_eq!(secret["stringData"]["password"], "ghp_tok3n");
}

#[test]
fn components_can_be_turned_off() {
    let mut s = spec();
    s.components = BTreeMap::from([
        ("karpenter".to_string(), json!({"enabled": false})),
        ("metrics-server".to_string(), json!({"enabled": false})),
        ("storage-class".to_string(), json!({"enabled": false})),
    ]);
    let m = render(Provider::Aws, &s);
    let apps = names(&m, "Application");
    assert!(!apps.contains(&"karpenter".to_string()), "{apps:?}");
    assert!(!apps.contains(&"metrics-server".to_string()), "{apps:?}");
    assert!(apps.contains(&"external-dns".to_string()), "{apps:?}");
    assert!(names(&m, "StorageClass").is_empty());
}

#[test]
fn components_take_extra_values_version_and_namespace() {
    let mut s = spec();
    s.components = BTreeMap::from([(
        "aws-load-balancer-controller".to_string(),
        json!({"version": "1.14.0", "namespace": "lbc", "values": {"replicaCount": 3, "clusterName": "override"}}),
    )]);
    let m = render(Provider::Aws, &s);
    let lbc = find(&m, "Application", "aws-load-balancer-controller").unwrap();
    let values = &lbc["spec"]["source"]["helm"]["valuesObject"];
    assert_eq!(values["replicaCount"], 3);
    // the job's values win over the derived ones; the other derived ones stay
    assert_eq!(values["clusterName"], "override");
    assert_eq!(values["region"], "eu-west-1");
    assert_eq!(lbc["spec"]["source"]["targetRevision"], "1.14.0");
    assert_eq!(lbc["spec"]["destination"]["namespace"], "lbc");
}

#[test]
fn unknown_component_is_an_error_naming_it() {
    let mut s = spec();
    s.components = BTreeMap::from([("cert-manager".to_string(), json!({"enabled": false}))]);
    let err = appofapps::render(&facts(Provider::Aws), &s).unwrap_err();
    assert!(
        matches!(err, AppOfAppsError::UnknownComponent { ref name, .. } if name == "cert-manager")
    );
    let text = err.to_string();
    assert!(
        text.contains("tendril.apps.components.cert-manager"),
        "{text}"
    );
    assert!(
        text.contains("external-dns"),
        "lists the known ones: {text}"
    );
}

#[test]
fn unknown_setting_is_an_error_naming_it() {
    let mut s = spec();
    s.components = BTreeMap::from([("external-dns".to_string(), json!({"vaules": {"x": 1}}))]);
    let err = appofapps::render(&facts(Provider::Aws), &s).unwrap_err();
    assert!(matches!(err, AppOfAppsError::UnknownSetting { ref key, .. } if key == "vaules"));
    assert!(
        err.to_string()
            .contains("tendril.apps.components.external-dns.vaules"),
        "{err}"
    );

    s.components = BTreeMap::from([("external-dns".to_string(), json!({"enabled": "no"}))]);
    let err = appofapps::render(&facts(Provider::Aws), &s).unwrap_err();
    assert!(
        matches!(err, AppOfAppsError::BadSetting { ref key, .. } if key == "enabled"),
        "{err}"
    );

    s.components = BTreeMap::from([("storage-class".to_string(), json!({"enabled": 1}))]);
    assert!(appofapps::render(&facts(Provider::Aws), &s).is_err());
}

#[test]
fn no_repository_is_an_error() {
    let s = AppOfApps::new("argocd", AppsSource::new(""));
    let err = appofapps::render(&facts(Provider::Aws), &s).unwrap_err();
    assert!(matches!(err, AppOfAppsError::NoRepository), "{err}");
}
