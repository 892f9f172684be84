//! `tendril deploy` as a user runs it: the demo-shaped job (real terraform,
//! local backend and artifacts in a temp dir) with `--no-cluster` and no
//! cluster, exit codes, `--output json` on stdout and progress on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn terraform_available() -> bool {
    let ok = Command::new("terraform")
        .arg("version")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this DEPLOY CLI test did not run !!!!!!!!\n"
        );
    }
    ok
}

fn tendril(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(args)
        // no cluster: the dry run renders only (the job's identity is `local`,
        // so an ambient KUBECONFIG or ~/.kube/config would be used)
        .env_remove("KUBECONFIG")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap()
}

fn snapshot(region: &str) -> Value {
    json!({"project_name": "shop", "environment": "prod", "region": region, "provider": "aws",
           "repositories": {"apps_destination_repo": "https://github.com/acme/shop-apps.git", "apps_path": "apps"}})
}

/// Writes the PLAN and DEPLOY job files into `dir` (relative paths, as the
/// demo does) and returns their paths.
fn write_jobs(dir: &Path, deploy_region: &str) -> (PathBuf, PathBuf) {
    let workdir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks");
    let tendril = json!({
        "terraform": {"workdir": workdir, "backend": {"local": {"path": "state/terraform.tfstate"}}},
        "artifacts": {"store": "local", "dir": "artifacts"},
        "argocd": {"namespace": "argocd", "timeout": "10m"},
    });
    let plan = json!({
        "job": {"id": "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a", "job_type": "PLAN", "vine_id": "v", "vineyard_id": "vy",
                "config_snapshot": snapshot("eu-west-1")},
        "cloud_identity": {"provider": "local"},
        "tendril": tendril,
    });
    let deploy = json!({
        "job": {"id": "3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10", "job_type": "DEPLOY", "vine_id": "v", "vineyard_id": "vy",
                "plan_job_id": "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a", "config_snapshot": snapshot(deploy_region)},
        "cloud_identity": {"provider": "local"},
        "tendril": tendril,
    });
    let p = dir.join("plan.yaml");
    let d = dir.join("deploy.yaml");
    std::fs::write(&p, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    std::fs::write(&d, serde_json::to_vec_pretty(&deploy).unwrap()).unwrap();
    (p, d)
}

#[test]
fn no_cluster_writes_manifests_kubeconfig_and_report() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (plan, deploy) = write_jobs(dir.path(), "eu-west-1");
    let out = tendril(&["plan", "--job", plan.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out_dir = dir.path().join("out");
    let out = tendril(&[
        "deploy",
        "--job",
        deploy.to_str().unwrap(),
        "--no-cluster",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout is exactly the report; progress went to stderr
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    tendril_testkit::report_schema::assert_valid_report(&report);
    assert_eq!(report["status"], "SUCCESS");
    assert_eq!(report["job_type"], "DEPLOY");
    assert_eq!(report["mode"], "no_cluster");
    assert_eq!(report["cluster"]["name"], "shop-prod");
    assert!(stderr.contains("terraform apply"), "{stderr}");
    assert!(stderr.contains("SUCCESS"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("terraform apply ok"));

    for f in [
        "argocd.yaml",
        "app-of-apps.yaml",
        "kubeconfig",
        "report.json",
    ] {
        assert!(
            out_dir.join(f).is_file(),
            "{f} missing in {}",
            out_dir.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("kubeconfig"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
    }
    let kubeconfig = std::fs::read_to_string(out_dir.join("kubeconfig")).unwrap();
    assert!(kubeconfig.contains("https://ABC123DEF456.gr7.eu-west-1.eks.amazonaws.com"));
    assert!(kubeconfig.contains("command: tendril"), "{kubeconfig}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(written["status"], "SUCCESS");
    assert_eq!(written["job_id"], report["job_id"]);
    let argocd = std::fs::read_to_string(out_dir.join("argocd.yaml")).unwrap();
    assert!(argocd.contains("name: argocd-server"));
    assert!(argocd.contains("kind: CustomResourceDefinition"));
    let aoa = std::fs::read_to_string(out_dir.join("app-of-apps.yaml")).unwrap();
    assert!(
        aoa.contains("repoURL: https://github.com/acme/shop-apps.git"),
        "{aoa}"
    );
    assert!(aoa.contains("name: aws-load-balancer-controller"));
}

#[test]
fn failure_exits_non_zero_and_still_reports() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // the DEPLOY job's snapshot differs from the PLAN's: a stale plan
    let (plan, deploy) = write_jobs(dir.path(), "us-east-1");
    let out = tendril(&["plan", "--job", plan.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out_dir = dir.path().join("out");
    let out = tendril(&[
        "deploy",
        "--job",
        deploy.to_str().unwrap(),
        "--dry-run",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("Configuration has changed since the plan was generated. Please re-plan."),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    tendril_testkit::report_schema::assert_valid_report(&report);
    assert_eq!(report["status"], "FAILED");
    assert_eq!(report["failed_phase"], "config_hash");
    assert!(out_dir.join("report.json").is_file());
    assert!(!dir.path().join("state/terraform.tfstate").exists());
}

#[test]
fn a_missing_job_file_is_a_clear_error() {
    let out = tendril(&["deploy", "--job", "/nonexistent/deploy.yaml", "--dry-run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/deploy.yaml"), "{stderr}");
    assert!(out.stdout.is_empty());
}
