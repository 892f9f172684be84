//! `tendril deploy` refuses a wrong job or flag in its `preflight` phase,
//! before `terraform init`: the state and the plan artifact are untouched,
//! and the message names the input and the fix. Also: `--dry-run` changes
//! nothing anywhere, `--no-cluster` applies terraform and leaves the cluster
//! alone, a job without an apps repository installs without the root
//! Application, and output files are written safely.
//!
//! Real terraform (the demo-shaped configuration, local backend and
//! artifacts in a temp dir), the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn terraform_available() -> bool {
    let ok = Command::new("terraform")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this preflight test did not run !!!!!!!!\n"
        );
    }
    ok
}

/// Runs tendril in an empty working directory of its own, so that what a
/// command writes by default (`--no-cluster` and `--dry-run` write to
/// `./tendril-out`) never lands in the checkout.
fn tendril(args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(args)
        .current_dir(cwd.path())
        .env_remove("TENDRIL_E2E_KUBECONFIG")
        .output()
        .unwrap()
}

const PLAN_ID: &str = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
const DEPLOY_ID: &str = "3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10";

/// A real, self-signed CA certificate (the demo fixture's).
fn demo_ca_base64() -> String {
    let tf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks/main.tf"),
    )
    .unwrap();
    let start = tf.find("\"LS0t").unwrap() + 1;
    let end = start + tf[start..].find('"').unwrap();
    tf[start..end].to_string()
}

/// A temp dir with a planned PLAN job and a DEPLOY job to edit.
struct Demo {
    dir: tempfile::TempDir,
    deploy: Value,
}

impl Demo {
    fn planned() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let workdir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks");
        let snapshot = json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws",
            "repositories": {"apps_destination_repo": "https://github.com/acme/shop-apps.git", "apps_path": "apps"}});
        let runner = json!({
            "terraform": {"workdir": workdir, "backend": {"local": {"path": "state/terraform.tfstate"}}},
            "artifacts": {"store": "local", "dir": "artifacts"},
            "argocd": {"namespace": "argocd", "timeout": "10m"},
        });
        let plan = json!({
            "job": {"id": PLAN_ID, "job_type": "PLAN", "vine_id": "v", "vineyard_id": "vy", "config_snapshot": snapshot},
            "cloud_identity": {"provider": "local"},
            "tendril": runner,
        });
        let deploy = json!({
            "job": {"id": DEPLOY_ID, "job_type": "DEPLOY", "vine_id": "v", "vineyard_id": "vy",
                    "plan_job_id": PLAN_ID, "config_snapshot": snapshot},
            "cloud_identity": {"provider": "local"},
            "tendril": runner,
        });
        let p = dir.path().join("plan.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
        let out = tendril(&["plan", "--job", p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Demo { dir, deploy }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the DEPLOY job (after `edit`) and returns its path.
    fn job(&self, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut job = self.deploy.clone();
        edit(&mut job);
        let p = self.path("deploy.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&job).unwrap()).unwrap();
        p
    }

    /// The artifact's files and their bytes.
    fn artifact(&self) -> Vec<(String, Vec<u8>)> {
        let dir = self.path("artifacts").join(PLAN_ID);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn state_exists(&self) -> bool {
        self.path("state/terraform.tfstate").exists()
    }

    /// Runs `tendril deploy --job JOB ARGS --output json`: exit code, report, stderr.
    fn deploy(&self, job: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
        let mut all = vec!["deploy", "--job", job.to_str().unwrap(), "--output", "json"];
        all.extend_from_slice(args);
        let out = tendril(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a JSON report ({e}): {}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        tendril_testkit::report_schema::assert_valid_report(&report);
        (out.status.code(), report, stderr)
    }

    /// Runs the deploy and checks it failed in preflight with nothing
    /// touched; returns the error message.
    fn refused(&self, job: &Path, args: &[&str]) -> String {
        let before = self.artifact();
        let (code, report, stderr) = self.deploy(job, args);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(report["status"], "FAILED", "{report:#}");
        assert_eq!(report["failed_phase"], "preflight", "{report:#}");
        let phases: Vec<&str> = report["timings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["phase"].as_str().unwrap())
            .collect();
        assert_eq!(phases, vec!["preflight"], "nothing ran after preflight");
        assert!(
            !stderr.contains("terraform init ..."),
            "terraform init never started: {stderr}"
        );
        assert!(!self.state_exists(), "no terraform state was written");
        assert_eq!(self.artifact(), before, "the plan artifact is untouched");
        report["error"].as_str().unwrap().to_string()
    }
}

fn set(job: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut cur = &mut *job;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        if cur.get(part).is_none() {
            cur[part] = json!({});
        }
        cur = &mut cur[part];
    }
    cur[key] = value;
}

fn remove(job: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(obj) = job.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.remove(key);
    }
}

#[test]
fn a_plan_job_given_to_deploy_is_refused_naming_job_type() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| set(j, "/job/job_type", json!("PLAN")));
    let err = demo.refused(&job, &["--no-cluster"]);
    assert!(
        err.contains("job field `job.job_type` is PLAN but `tendril deploy` runs DEPLOY jobs")
            && err.contains("tendril plan"),
        "{err}"
    );
}

#[test]
fn an_unknown_component_is_refused_before_terraform() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| {
        set(
            j,
            "/tendril/apps/components/cert-manager",
            json!({"enabled": true}),
        )
    });
    let err = demo.refused(&job, &["--no-cluster"]);
    assert!(
        err.contains("tendril.apps.components.cert-manager: unknown platform component")
            && err.contains("external-dns"),
        "{err}"
    );
}

#[test]
fn a_misspelt_component_key_is_refused_before_terraform() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| {
        set(
            j,
            "/tendril/apps/components/external-dns",
            json!({"vaules": {"x": 1}}),
        )
    });
    let err = demo.refused(&job, &["--no-cluster"]);
    assert!(
        err.contains("tendril.apps.components.external-dns.vaules: unknown setting")
            && err.contains("`values`"),
        "{err}"
    );
}

#[test]
fn a_missing_chart_is_refused_naming_the_field() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| set(j, "/tendril/argocd/chart", json!("./no-such-chart.tgz")));
    let err = demo.refused(&job, &["--no-cluster"]);
    assert!(
        err.contains("job field `tendril.argocd.chart`")
            && err.contains("no-such-chart.tgz")
            && err.contains("remove the field to use the embedded Argo CD chart"),
        "{err}"
    );
    assert!(
        !err.contains("/./"),
        "the path is normalised in the message: {err}"
    );
}

#[test]
fn values_failing_a_required_check_are_refused_before_terraform() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| {
        set(
            j,
            "/tendril/argocd/values",
            json!({"configs": {"secret": {"argocdServerAdminPassword": "$2a$10$abcdefghijklmnopqrstuu"}}}),
        )
    });
    let err = demo.refused(&job, &["--no-cluster"]);
    assert!(
        err.contains("job field `tendril.argocd.values`")
            && err.contains("argocdServerAdminPasswordMtime must be set"),
        "{err}"
    );
}

#[test]
fn an_unreadable_kubeconfig_is_refused_naming_the_file() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|_| {});
    let err = demo.refused(&job, &["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert!(
        err.contains("kubeconfig `/nonexistent/kubeconfig`") && err.contains("cannot be read"),
        "{err}"
    );
}

fn kubeconfig(server: &str, cluster_extra: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{cluster_extra}\
         users:\n- name: u\n  user:\n{user}\
         contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\n"
    )
}

#[test]
fn a_kubeconfig_that_skips_tls_verification_is_refused() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let kc = demo.path("insecure.yaml");
    std::fs::write(
        &kc,
        kubeconfig(
            "https://127.0.0.1:6443",
            "    insecure-skip-tls-verify: true\n",
            "    token: abc\n",
        ),
    )
    .unwrap();
    let job = demo.job(|_| {});
    let err = demo.refused(&job, &["--kubeconfig", kc.to_str().unwrap()]);
    assert!(
        err.contains("insecure-skip-tls-verify") && err.contains("certificate-authority-data"),
        "{err}"
    );
}

#[test]
fn a_kubeconfig_sending_credentials_over_http_is_refused() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|_| {});
    for (user, what) in [
        ("    token: abc\n", "a bearer token"),
        (
            "    client-key-data: a2V5\n    client-certificate-data: Y2VydA==\n",
            "a client certificate's key",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: get-token\n",
            "an exec plugin's credential",
        ),
    ] {
        let kc = demo.path("http.yaml");
        std::fs::write(&kc, kubeconfig("http://127.0.0.1:8080", "", user)).unwrap();
        let err = demo.refused(&job, &["--kubeconfig", kc.to_str().unwrap()]);
        assert!(
            err.contains("plain http://") && err.contains(what) && err.contains("https://"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_kubeconfig_whose_ca_is_no_certificate_is_refused() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let kc = demo.path("badca.yaml");
    // PEM-shaped, but `MIIBdemo` is no X.509 certificate
    let bogus =
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkZW1vCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
    std::fs::write(
        &kc,
        kubeconfig(
            "https://127.0.0.1:6443",
            &format!("    certificate-authority-data: {bogus}\n"),
            "    token: abc\n",
        ),
    )
    .unwrap();
    let job = demo.job(|_| {});
    let err = demo.refused(&job, &["--kubeconfig", kc.to_str().unwrap()]);
    assert!(
        err.contains(kc.to_str().unwrap())
            && err.contains("certificate-authority-data is not a CA certificate")
            && err.contains("X.509"),
        "{err}"
    );
    // the real test certificate passes the same check (the run then fails
    // later, at the unreachable cluster, which is not preflight's to know)
    std::fs::write(
        &kc,
        kubeconfig(
            "https://127.0.0.1:1",
            &format!("    certificate-authority-data: {}\n", demo_ca_base64()),
            "    token: abc\n",
        ),
    )
    .unwrap();
    let (_, report, _) = demo.deploy(&job, &["--kubeconfig", kc.to_str().unwrap(), "--dry-run"]);
    assert_ne!(report["failed_phase"], "preflight", "{report:#}");
}

#[test]
fn an_output_dir_under_a_regular_file_is_refused() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let file = demo.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("out");
    let job = demo.job(|_| {});
    let err = demo.refused(&job, &["--no-cluster", "--out-dir", out.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{} is a file, not a directory", file.display()))
            && err.contains("choose a directory"),
        "{err}"
    );
}

#[test]
fn cloud_identity_local_without_a_kubeconfig_needs_a_mode() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|_| {});
    let err = demo.refused(&job, &[]);
    assert!(
        err.contains("cloud identity `local` gives no cluster credentials")
            && err.contains("--dry-run")
            && err.contains("--no-cluster")
            && err.contains("tendril.kubernetes.kubeconfig"),
        "{err}"
    );
}

#[test]
fn an_unreadable_job_file_still_gives_a_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "job: [unclosed").unwrap();
    for (path, needle) in [
        (&missing, "cannot read job file"),
        (&bad, "is not a valid job"),
    ] {
        let out = tendril(&[
            "deploy",
            "--job",
            path.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        tendril_testkit::report_schema::assert_valid_report(&report);
        assert_eq!(report["status"], "FAILED");
        assert_eq!(report["failed_phase"], "preflight");
        assert!(
            report["error"].as_str().unwrap().contains(needle),
            "{report:#}"
        );
        let out = tendril(&["plan", "--job", path.to_str().unwrap(), "--output", "json"]);
        assert_eq!(out.status.code(), Some(1));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        tendril_testkit::report_schema::assert_valid_report(&report);
        assert_eq!(report["status"], "FAILED");
        assert!(
            report["error"].as_str().unwrap().contains(needle),
            "{report:#}"
        );
    }
}

#[test]
fn dry_run_changes_nothing_and_the_plan_stays_applicable() {
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|_| {});
    let before = demo.artifact();
    let out_dir = demo.path("dry");
    let (code, report, stderr) =
        demo.deploy(&job, &["--dry-run", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["status"], "SUCCESS");
    assert_eq!(report["mode"], "dry_run");
    assert!(!demo.state_exists(), "terraform applied nothing");
    assert_eq!(demo.artifact(), before);
    assert_eq!(report["change_summary"]["applied"], false);
    assert_eq!(report["change_summary"]["add"], 4);
    // known outputs from the plan, unknown ones marked
    assert_eq!(
        report["outputs"]["eks_cluster_endpoint"],
        "https://ABC123DEF456.gr7.eu-west-1.eks.amazonaws.com"
    );
    assert_eq!(report["outputs"]["eks_cluster_name"], "(known after apply)");
    assert_eq!(
        report["outputs"]["rds_master_credentials_secret_arn"],
        "[redacted]"
    );
    let timings: Vec<(String, String)> = report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["phase"].as_str().unwrap().to_string(),
                t["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        timings.contains(&("terraform_apply".into(), "skipped".into())),
        "{timings:?}"
    );
    // manifests rendered from the plan's facts
    let aoa = std::fs::read_to_string(out_dir.join("app-of-apps.yaml")).unwrap();
    assert!(aoa.contains("(known after apply)"), "{aoa}");
    assert!(out_dir.join("argocd.yaml").is_file());

    // the plan was not consumed: applying it now works
    let (code, report, stderr) = demo.deploy(
        &job,
        &["--no-cluster", "--out-dir", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["mode"], "no_cluster");
    assert_eq!(report["change_summary"]["applied"], true);
    assert_eq!(report["change_summary"]["add"], 4);
    assert_eq!(report["cluster"]["name"], "shop-prod");
    assert!(demo.state_exists());
}

#[cfg(unix)]
#[test]
fn no_cluster_writes_secret_outputs_0600_and_without_apps_repo_leaves_out_root() {
    use std::os::unix::fs::PermissionsExt;
    if !terraform_available() {
        return;
    }
    let demo = Demo::planned();
    let job = demo.job(|j| remove(j, "/job/config_snapshot/repositories/apps_destination_repo"));
    // the snapshot changed: the plan of that snapshot is needed, so re-plan it
    let mut plan: Value =
        serde_json::from_slice(&std::fs::read(demo.path("plan.json")).unwrap()).unwrap();
    remove(
        &mut plan,
        "/job/config_snapshot/repositories/apps_destination_repo",
    );
    std::fs::write(demo.path("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    let out = tendril(&["plan", "--job", demo.path("plan.json").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out_dir = demo.path("out");
    let (code, report, stderr) = demo.deploy(
        &job,
        &["--no-cluster", "--out-dir", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["status"], "SUCCESS");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("no apps repository")
            && warnings.contains("root Application is left out"),
        "{warnings}"
    );
    let aoa = std::fs::read_to_string(out_dir.join("app-of-apps.yaml")).unwrap();
    assert!(!aoa.contains("name: root\n"), "{aoa}");
    assert!(
        aoa.contains("name: external-dns"),
        "the components are there: {aoa}"
    );
    for f in [
        "report.json",
        "app-of-apps.yaml",
        "argocd.yaml",
        "kubeconfig",
    ] {
        let mode = std::fs::metadata(out_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[cfg(unix)]
#[test]
fn render_writes_through_a_fifo_and_into_a_symlinks_target() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let out = tendril(&["render", "--output-file", fifo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = reader.join().unwrap();
    assert!(String::from_utf8_lossy(&text).contains("kind: Deployment"));
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "still a FIFO"
    );

    let real = dir.path().join("real.yaml");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = tendril(&["render", "--output-file", link.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("kind: Deployment")
    );
}

#[test]
fn a_set_nested_20000_levels_is_an_error_not_a_crash() {
    let deep = format!("{}=1", vec!["a"; 20_000].join("."));
    let out = tendril(&["render", "--set", &deep]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nested more than 64 levels"), "{stderr}");
}

#[test]
fn a_runaway_template_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: runaway\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "n: 100000\n").unwrap();
    std::fs::write(
        chart.join("templates/loop.yaml"),
        "{% for i in range(end=values.n) %}{% for j in range(end=values.n) %}x: {{ i }}-{{ j }}\n{% endfor %}{% endfor %}",
    )
    .unwrap();
    let out = tendril(&["render", "--chart", chart.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("templates/loop.yaml") && stderr.contains("renders more than 64 MiB"),
        "{stderr}"
    );
}

#[test]
fn apply_refuses_a_token_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        kubeconfig("http://127.0.0.1:9", "", "    token: abc\n"),
    )
    .unwrap();
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n",
    )
    .unwrap();
    let out = tendril(&[
        "apply",
        "-f",
        manifest.to_str().unwrap(),
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plain http://") && stderr.contains("a bearer token"),
        "{stderr}"
    );
}
