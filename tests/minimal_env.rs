//! What the minimal image (`Dockerfile`: tendril, terraform and CA
//! certificates, nothing else) promises, checked without a container engine:
//! `plan`, `deploy` without a cluster, `render` and `token eks` run with an
//! emptied environment (`env -i`), no `HOME`, and a `PATH` holding only
//! terraform and trap scripts named after the CLIs tendril must never need
//! (aws, kubectl, helm, gcloud, az, ...). Each trap records being called; the
//! test fails if any was.

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// Programs a cloud-native tool might shell out to; none may run.
const TRAPS: &[&str] = &[
    "aws",
    "kubectl",
    "helm",
    "gcloud",
    "az",
    "kubelogin",
    "gke-gcloud-auth-plugin",
    "aws-iam-authenticator",
    "git",
    "sh",
    "bash",
    "curl",
    "tar",
    "gzip",
    "openssl",
];

/// The real terraform, found on the test's own PATH.
fn terraform() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("terraform"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// A `bin/` with terraform and the traps, and the file the traps write to.
struct MinimalPath {
    bin: PathBuf,
    calls: PathBuf,
}

impl MinimalPath {
    fn new(dir: &Path, terraform: &Path) -> MinimalPath {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        symlink(terraform, bin.join("terraform")).unwrap();
        let calls = dir.join("trap-calls");
        for name in TRAPS {
            let script = bin.join(name);
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 97\n",
                    calls.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        MinimalPath { bin, calls }
    }

    /// Runs tendril with only `PATH` (and `extra`) in its environment.
    fn tendril(&self, cwd: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tendril"));
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", &self.bin);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "tendril {args:?} failed in the minimal environment:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.assert_no_trap_ran();
        out
    }

    fn assert_no_trap_ran(&self) {
        if let Ok(calls) = std::fs::read_to_string(&self.calls) {
            panic!("tendril ran programs other than terraform:\n{calls}");
        }
    }
}

fn snapshot() -> Value {
    json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws",
           "repositories": {"apps_destination_repo": "https://github.com/acme/shop-apps.git", "apps_path": "apps"}})
}

/// The demo-shaped PLAN and DEPLOY jobs, with relative paths under `dir`.
fn write_jobs(dir: &Path) -> (PathBuf, PathBuf) {
    let workdir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks");
    let tendril = json!({
        "terraform": {"workdir": workdir, "backend": {"local": {"path": "state/terraform.tfstate"}}},
        "artifacts": {"store": "local", "dir": "artifacts"},
        "argocd": {"namespace": "argocd", "timeout": "10m"},
    });
    let job = |id: &str, kind: &str, plan: Option<&str>| {
        let mut job = json!({"id": id, "job_type": kind, "vine_id": "v", "vineyard_id": "vy",
                             "config_snapshot": snapshot()});
        if let Some(p) = plan {
            job["plan_job_id"] = json!(p);
        }
        json!({"job": job, "cloud_identity": {"provider": "local"}, "tendril": tendril})
    };
    let plan_id = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
    let p = dir.join("plan.yaml");
    let d = dir.join("deploy.yaml");
    std::fs::write(&p, job(plan_id, "PLAN", None).to_string()).unwrap();
    let deploy = job(
        "3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10",
        "DEPLOY",
        Some(plan_id),
    );
    std::fs::write(&d, deploy.to_string()).unwrap();
    (p, d)
}

#[test]
fn plan_deploy_render_and_token_need_only_terraform() {
    let Some(terraform) = terraform() else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; the minimal-environment test did not run !!!!!!!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = MinimalPath::new(dir.path(), &terraform);
    let (plan, deploy) = write_jobs(dir.path());

    let out = path.tendril(
        dir.path(),
        &["plan", "--job", plan.to_str().unwrap(), "-o", "json"],
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    tendril_testkit::report_schema::assert_valid_report(&report);
    assert_eq!(report["change_summary"]["add"], 4, "{report:#}");
    // the demo's snapshot keys (`provider`, `repositories`) warn no more
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("undeclared variable"), "{stderr}");
    assert_eq!(report["warnings"], Value::Array(vec![]), "{report:#}");

    // `--no-cluster`: terraform applies the plan, the manifests are written,
    // no cluster is contacted (the job gives none)
    let out_dir = dir.path().join("out");
    let out = path.tendril(
        dir.path(),
        &[
            "deploy",
            "--job",
            deploy.to_str().unwrap(),
            "--no-cluster",
            "--out-dir",
            out_dir.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    tendril_testkit::report_schema::assert_valid_report(&report);
    assert_eq!(report["status"], "SUCCESS", "{report:#}");
    // no terminal: each phase is one line, printed when it ends
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in 1..=11 {
        let head = format!("[{n}/11] ");
        let lines = stderr.lines().filter(|l| l.starts_with(&head)).count();
        assert!(lines <= 1, "phase {n} printed {lines} lines:\n{stderr}");
    }
    assert!(
        stderr.contains("[1/11] check the job and the flags ok in")
            && stderr.contains("[2/11] assume cloud credentials ok in"),
        "{stderr}"
    );
    assert!(!stderr.contains(" ..."), "{stderr}");
    assert_eq!(report["cluster"]["name"], "shop-prod");
    // one name per phase everywhere: the report says `argocd`, as the docs and errors do
    let phases: Vec<&str> = report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["phase"].as_str())
        .collect();
    assert!(phases.contains(&"argocd"), "{phases:?}");
    let argocd = std::fs::read_to_string(out_dir.join("argocd.yaml")).unwrap();
    assert!(argocd.contains("kind: Deployment"), "{argocd}");

    let out = path.tendril(dir.path(), &["render", "--redis-password", "p"], &[]);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("name: argocd-server"), "{}", &yaml[..500]);

    let out = path.tendril(
        dir.path(),
        &[
            "token",
            "eks",
            "--cluster",
            "shop-prod",
            "--region",
            "eu-west-1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
        ],
    );
    let credential: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(credential["kind"], "ExecCredential");
    let token = credential["status"]["token"].as_str().unwrap();
    assert!(token.starts_with("k8s-aws-v1."), "{token}");
}

#[test]
fn the_traps_do_record_a_call() {
    // the check above is only worth something if a trap that runs is seen
    let dir = tempfile::tempdir().unwrap();
    let path = MinimalPath::new(dir.path(), Path::new("/bin/true"));
    let status = Command::new(path.bin.join("kubectl"))
        .arg("version")
        .env_clear()
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(97));
    let calls = std::fs::read_to_string(&path.calls).unwrap();
    assert_eq!(calls, "kubectl version\n");
}
