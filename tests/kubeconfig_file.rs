//! `tendril kubeconfig`: kubeconfig files from outputs or facts, merged atomically.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::config::Kubeconfig;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/fixtures/outputs/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn tendril(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> Kubeconfig {
    Kubeconfig::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn aws_outputs_give_an_exec_plugin_kubeconfig_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kubeconfig");
    ok(&tendril(&[
        "kubeconfig",
        "--facts",
        fixture("aws").to_str().unwrap(),
        "--kubeconfig",
        out.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kc = read(&out);
    let ctx = "arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod";
    assert_eq!(kc.current_context.as_deref(), Some(ctx));
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(
        cluster.server.as_deref(),
        Some("https://9F2E4B1C0A7D.gr7.eu-west-1.eks.amazonaws.com")
    );
    assert!(cluster.certificate_authority_data.is_some());
    assert_ne!(cluster.insecure_skip_tls_verify, Some(true));
    let exec = kc.auth_infos[0]
        .auth_info
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert_eq!(exec.command.as_deref(), Some("tendril"));
    assert_eq!(
        exec.api_version.as_deref(),
        Some("client.authentication.k8s.io/v1beta1")
    );
    assert_eq!(
        exec.args.as_deref().unwrap(),
        [
            "token",
            "eks",
            "--cluster",
            "shop-prod",
            "--region",
            "eu-west-1"
        ]
    );
}

#[test]
fn gcp_and_azure_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kc");
    ok(&tendril(&[
        "kubeconfig",
        "--facts",
        fixture("gcp").to_str().unwrap(),
        "--kubeconfig",
        out.to_str().unwrap(),
    ]));
    ok(&tendril(&[
        "kubeconfig",
        "--facts",
        fixture("azure").to_str().unwrap(),
        "--kubeconfig",
        out.to_str().unwrap(),
        "--context",
        "aks",
        "--tenant-id",
        "t-1",
        "--client-id",
        "c-1",
    ]));
    let kc = read(&out);
    assert_eq!(kc.contexts.len(), 2, "merged");
    assert_eq!(kc.current_context.as_deref(), Some("aks"));
    let gke = kc
        .auth_infos
        .iter()
        .find(|u| u.name == "shop-prod")
        .unwrap();
    assert_eq!(
        gke.auth_info
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .args
            .as_deref()
            .unwrap(),
        ["token", "gke"]
    );
    let aks = kc.auth_infos.iter().find(|u| u.name == "aks").unwrap();
    assert_eq!(
        aks.auth_info
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .args
            .as_deref()
            .unwrap(),
        ["token", "aks", "--tenant-id", "t-1", "--client-id", "c-1"]
    );
    let gke_cluster = kc.clusters.iter().find(|c| c.name == "shop-prod").unwrap();
    assert_eq!(
        gke_cluster.cluster.as_ref().unwrap().server.as_deref(),
        Some("https://34.78.12.200")
    );
}

#[test]
fn merge_keeps_other_entries_and_replaces_the_same_context() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config");
    std::fs::write(
        &out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: kind\n  context:\n    cluster: kind\n    user: kind\nusers:\n- name: kind\n  user:\n    token: keep-me\ncurrent-context: kind\n",
    )
    .unwrap();
    let aws = fixture("aws");
    let args = [
        "kubeconfig",
        "--facts",
        aws.to_str().unwrap(),
        "--kubeconfig",
        out.to_str().unwrap(),
        "--context",
        "shop",
    ];
    ok(&tendril(&args));
    ok(&tendril(&args));
    let kc = read(&out);
    let names: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["kind", "shop"],
        "added once, replaced the second time"
    );
    assert_eq!(kc.clusters.len(), 2);
    assert_eq!(kc.current_context.as_deref(), Some("shop"));
    let kind = kc.auth_infos.iter().find(|u| u.name == "kind").unwrap();
    assert!(
        kind.auth_info.as_ref().unwrap().token.is_some(),
        "the other user is kept"
    );
}

#[test]
fn errors_leave_the_existing_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config");
    let original = "this: is: not: a kubeconfig\n";
    std::fs::write(&out, original).unwrap();
    let r = tendril(&[
        "kubeconfig",
        "--facts",
        fixture("aws").to_str().unwrap(),
        "--kubeconfig",
        out.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("not a valid kubeconfig"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), original);

    // a missing output: error names output and key; nothing written
    let mut outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gcp")).unwrap()).unwrap();
    outputs
        .as_object_mut()
        .unwrap()
        .remove("gke_cluster_endpoint");
    let facts = dir.path().join("outputs.json");
    std::fs::write(&facts, outputs.to_string()).unwrap();
    let target = dir.path().join("new-config");
    let r = tendril(&[
        "kubeconfig",
        "--facts",
        facts.to_str().unwrap(),
        "--provider",
        "gcp",
        "--kubeconfig",
        target.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("gke_cluster_endpoint") && err.contains("cluster_endpoint"),
        "{err}"
    );
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temp files left: {leftovers:?}");

    // an unreadable facts file
    let r = tendril(&[
        "kubeconfig",
        "--facts",
        "/nonexistent/out.json",
        "--kubeconfig",
        target.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/out.json"));
}

#[test]
fn embedded_eks_token_and_facts_file_input() {
    let dir = tempfile::tempdir().unwrap();
    // a facts file (YAML) instead of outputs
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("aws")).unwrap()).unwrap();
    let facts = tendril::facts::InfraFacts::from_outputs(
        tendril::cloud::Provider::Aws,
        &outputs,
        &tendril::facts::OutputMapping::defaults(tendril::cloud::Provider::Aws),
    )
    .unwrap();
    let facts_path = dir.path().join("facts.yaml");
    std::fs::write(&facts_path, serde_saphyr::to_string(&facts).unwrap()).unwrap();
    let out = dir.path().join("kc");
    let r = Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args([
            "kubeconfig",
            "--facts",
            facts_path.to_str().unwrap(),
            "--kubeconfig",
            out.to_str().unwrap(),
            "--embed-token",
        ])
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "SECRET")
        .output()
        .unwrap();
    ok(&r);
    let kc = read(&out);
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert!(user.exec.is_none());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("k8s-aws-v1."), "token embedded");
    assert!(
        !String::from_utf8_lossy(&r.stderr).contains("k8s-aws-v1."),
        "token not printed"
    );
}
