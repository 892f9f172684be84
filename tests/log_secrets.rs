//! Logs at trace level never carry a secret: a PLAN and a DEPLOY (server dry
//! run against the cluster of `tendril_testkit::e2e`, so every Secret travels
//! through the HTTP stack) and `tendril token eks`, each with canary secrets,
//! and the whole of stderr grepped for them. The same runs check what a person
//! debugging relies on: `--log-format json` gives one JSON object per line,
//! inside `job` and `phase` spans, with each terraform command line and each
//! API request's verb, path and status.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use tendril_testkit::e2e;

const ADMIN_PASSWORD: &str = "canary-admin-Q7v3pX9w";
const GIT_TOKEN: &str = "canary-git-token-Zr81mKd2";
const AWS_SECRET: &str = "canary-aws-secret-Hq4Lw0Pb/xYz";
const AWS_SESSION: &str = "canary-aws-session-Tn6Fe2Jc";
const CANARIES: &[&str] = &[ADMIN_PASSWORD, GIT_TOKEN, AWS_SECRET, AWS_SESSION];

fn terraform_available() -> bool {
    let ok = std::process::Command::new("terraform")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; the log secrets test did not run !!!!!!!!\n"
        );
    }
    ok
}

/// Runs tendril at trace level with JSON logs, off the async runtime.
async fn tendril(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tendril"))
            .args(&args)
            .env("TENDRIL_LOG", "trace")
            .env("TENDRIL_ADMIN_CANARY", ADMIN_PASSWORD)
            .env("TENDRIL_GIT_CANARY", GIT_TOKEN)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_SESSION_TOKEN", AWS_SESSION)
            .env("AWS_ACCESS_KEY_ID", "AKIDCANARYEXAMPLE")
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Every line of a `--log-format json` stderr, parsed; panics on one that is not JSON.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn assert_no_canary(what: &str, log: &str) {
    for canary in CANARIES {
        assert!(
            !log.contains(canary),
            "{what}: the log carries the secret {canary}"
        );
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn spans(line: &Value) -> Vec<&str> {
    line["spans"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default()
}

fn write_jobs(dir: &Path, namespace: &str) -> (PathBuf, PathBuf) {
    let snapshot = json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1",
        "provider": "aws", "repositories": {"apps_destination_repo": "https://github.com/acme/shop-apps.git", "apps_path": "apps"}});
    let tendril = json!({
        "terraform": {"workdir": Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks"),
                      "backend": {"local": {"path": "state/terraform.tfstate"}}},
        "artifacts": {"store": "local", "dir": "artifacts"},
        "argocd": {"namespace": namespace, "timeout": "120s",
                   "admin_password": {"env": "TENDRIL_ADMIN_CANARY"}},
        "apps": {"credentials": {"username": "git", "token": {"env": "TENDRIL_GIT_CANARY"}}},
    });
    let plan_id = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
    let job = |id: &str, kind: &str| {
        let mut job = json!({"id": id, "job_type": kind, "vine_id": "v", "vineyard_id": "vy",
                             "config_snapshot": snapshot});
        if kind == "DEPLOY" {
            job["plan_job_id"] = json!(plan_id);
        }
        json!({"job": job, "cloud_identity": {"provider": "local"}, "tendril": tendril})
    };
    let p = dir.join("plan.json");
    let d = dir.join("deploy.json");
    std::fs::write(&p, job(plan_id, "PLAN").to_string()).unwrap();
    std::fs::write(
        &d,
        job("3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10", "DEPLOY").to_string(),
    )
    .unwrap();
    (p, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_plan_deploy_and_token_hold_no_secret() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    // Argo CD goes (as a server dry run) into `default`, which every cluster
    // has: the test creates nothing the product must create, and the Secrets
    // still cross the HTTP stack (a dry run into a namespace that does not
    // exist yet only renders what lives in it)
    let namespace = "default";
    let dir = tempfile::tempdir().unwrap();
    let (plan, deploy) = write_jobs(dir.path(), namespace);
    let arg = |p: &Path| p.to_str().unwrap().to_string();

    // text logs: no colours when stderr is not a terminal
    let out = tendril(vec!["plan".into(), "--job".into(), arg(&plan)]).await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_no_canary("plan", &log);
    assert!(
        log.lines()
            .any(|l| l.contains("running terraform plan") && l.contains("-out=")),
        "no terraform command line logged:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "ANSI escapes in {log:?}");

    let out = tendril(vec![
        "--log-format".into(),
        "json".into(),
        "deploy".into(),
        "--job".into(),
        arg(&deploy),
        "--dry-run".into(),
        "--out-dir".into(),
        arg(&dir.path().join("out")),
        "--kubeconfig".into(),
        arg(cluster.kubeconfig_path()),
    ])
    .await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_no_canary("deploy", &log);
    let lines = json_lines(&log);
    // a dry run reads the saved plan (`terraform show`, in the outputs
    // phase) instead of applying it
    let terraform_show = lines
        .iter()
        .find(|l| message(l) == "running terraform show")
        .unwrap_or_else(|| panic!("no terraform command line logged:\n{log}"));
    assert_eq!(spans(terraform_show), ["job", "phase"], "{terraform_show}");
    assert_eq!(
        terraform_show["span"]["phase"], "outputs",
        "{terraform_show}"
    );
    let secret_apply = lines
        .iter()
        .find(|l| {
            message(l) == "API request"
                && l["fields"]["method"] == "PATCH"
                && l["fields"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/secrets/"))
        })
        .unwrap_or_else(|| panic!("no Secret apply request logged:\n{log}"));
    let status = secret_apply["fields"]["status"].as_u64();
    assert!(matches!(status, Some(200 | 201)), "{secret_apply}");
    assert!(
        spans(secret_apply).starts_with(&["job", "phase"]),
        "{secret_apply}"
    );
    assert!(
        lines.iter().any(|l| message(l) == "discovered"),
        "no discovery logged"
    );

    let out = tendril(vec![
        "--log-format".into(),
        "json".into(),
        "token".into(),
        "eks".into(),
        "--cluster".into(),
        "shop-prod".into(),
        "--region".into(),
        "eu-west-1".into(),
    ])
    .await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_no_canary("token eks", &log);
    // the session token does reach the credential itself, which is the point
    assert!(String::from_utf8_lossy(&out.stdout).contains("k8s-aws-v1."));

    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(cluster.client(), namespace);
    assert!(
        secrets.get_opt("argocd-secret").await.unwrap().is_none(),
        "the dry run stored argocd-secret in {namespace}"
    );
}
