//! The PLAN job and the terraform half of DEPLOY, end to end, with the real
//! terraform: plan → upload → download → verify → hash check → apply. The
//! DEPLOY runs the shipped pipeline with the cluster left alone
//! (`no_cluster`): these tests are about its terraform phases.
//!
//! Each test prints a loud SKIPPED line when terraform is not on PATH (CI's
//! `.ci/run` fails earlier in that case).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tendril::Secret;
use tendril::artifact::{S3Credentials, S3Store};
use tendril::confighash::ConfigHash;
use tendril::job::JobFile;
use tendril::pipeline::deploy::{DeployOptions, run_deploy};
use tendril::pipeline::plan;
use tendril::pipeline::{JobEvent, JobReport, JobStatus, Phase, PhaseEvent, PhaseOutcome};
use tendril_testkit::moto::{self, Moto};
use tendril_testkit::storage::SupabaseStorage;
use tokio_util::sync::CancellationToken;

const PLAN_ID: &str = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
const DEPLOY_ID: &str = "9d8c7b6a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";

fn terraform_available() -> bool {
    let ok = std::process::Command::new("terraform")
        .arg("version")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this PLAN/DEPLOY test did not run !!!!!!!!\n"
        );
    }
    ok
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/terraform")
        .join(name)
}

fn snapshot() -> Value {
    json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "local",
           "cluster": {"cluster_version": "1.33", "node_min_size": 2}})
}

/// Writes a job file into `dir` and loads it.
fn job(dir: &Path, name: &str, job_type: &str, snapshot: Value, tendril: Value) -> JobFile {
    let mut j = json!({
        "job": {"id": if job_type == "PLAN" { PLAN_ID } else { DEPLOY_ID }, "job_type": job_type,
                "vine_id": "v1", "vineyard_id": "vy1", "config_snapshot": snapshot},
        "cloud_identity": {"provider": "local"},
        "tendril": tendril,
    });
    if job_type == "DEPLOY" {
        j["job"]["plan_job_id"] = json!(PLAN_ID);
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    JobFile::load(&path).unwrap()
}

fn local_tendril(dir: &Path, fixture_name: &str) -> Value {
    json!({
        "terraform": {"workdir": fixture(fixture_name), "backend": {"local": {"path": dir.join("state/terraform.tfstate")}}},
        "artifacts": {"store": "local", "dir": dir.join("artifacts")},
    })
}

fn collect() -> (Arc<Mutex<Vec<JobEvent>>>, impl Fn(JobEvent) + Send + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    (events, move |e| e2.lock().unwrap().push(e))
}

/// Runs the DEPLOY pipeline with the cluster left alone.
async fn deploy_no_cluster(
    job: &JobFile,
    sink: &(dyn Fn(JobEvent) + Send + Sync),
    cancel: &CancellationToken,
) -> JobReport {
    let opts = DeployOptions {
        no_cluster: true,
        ..DeployOptions::default()
    };
    run_deploy(job, &opts, sink, cancel).await
}

/// Asserts the report succeeded, showing its error otherwise; every report
/// is checked against the report schema too.
fn succeeded(report: JobReport) -> JobReport {
    tendril_testkit::report_schema::assert_valid_report(&serde_json::to_value(&report).unwrap());
    assert_eq!(
        report.status,
        JobStatus::Success,
        "{:?}: {:?}",
        report.failed_phase,
        report.error
    );
    report
}

/// Asserts the report failed in `phase` and returns its error text.
fn failed_in(report: &JobReport, phase: Phase) -> String {
    tendril_testkit::report_schema::assert_valid_report(&serde_json::to_value(report).unwrap());
    assert_eq!(report.status, JobStatus::Failed, "{:?}", report.error);
    assert_eq!(report.failed_phase, Some(phase), "{:?}", report.error);
    report.error.clone().unwrap_or_default()
}

// moto accepts any key pair; these are distinctive so a leak is findable.
const STATE_KEY_ID: &str = "STATEKEYID0123456789";
const STATE_SECRET: &str = "state-secret-value-9f8e7d6c";

/// The concatenated contents of a zip archive's entries (a saved plan is a zip).
fn unzipped_text(dir: &Path, bytes: &[u8]) -> String {
    let path = dir.join("inspect.zip");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor n in z.namelist():\n    sys.stdout.buffer.write(n.encode() + b'\\n' + z.read(n) + b'\\n')",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stand-in terraform that only records that it was started.
fn tripwire(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("terraform-was-started");
    let script = dir.join("tripwire-terraform");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, marker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_deploy_with_local_state_and_local_artifacts() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();
    let plan_job = job(
        dir.path(),
        "plan.json",
        "PLAN",
        snapshot(),
        local_tendril(dir.path(), "basic"),
    );
    let (events, sink) = collect();
    let report = succeeded(plan::run_plan(&plan_job, &sink, &never).await);

    assert_eq!(
        report.config_hash,
        Some(ConfigHash::of(&snapshot()).to_string())
    );
    let changes = report.change_summary.as_ref().unwrap();
    assert_eq!(
        (changes.add, changes.remove, changes.applied),
        (2, 0, false)
    );
    assert_eq!(
        report.timings.iter().map(|t| t.phase).collect::<Vec<_>>(),
        plan::PHASES
    );
    // Undeclared snapshot keys (`provider`, `cluster`) only warn.
    assert!(!report.warnings.is_empty());
    {
        let events = events.lock().unwrap();
        assert!(events.iter().any(|e| matches!(
            e,
            JobEvent::Phase(PhaseEvent::Finished {
                phase: Phase::Upload,
                outcome: PhaseOutcome::Ok,
                ..
            })
        )));
        assert!(events.iter().any(|e| matches!(
            e,
            JobEvent::Terraform(tendril::terraform::Event::PlannedChange { .. })
        )));
    }

    // The artifact is in the store; the manifest carries the hash and digest.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("artifacts")
                .join(PLAN_ID)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config_hash"], json!(report.config_hash));
    assert_eq!(
        manifest["plan_sha256"],
        report.artifact.as_ref().unwrap().plan_sha256
    );
    // Planning wrote no state.
    assert!(!dir.path().join("state/terraform.tfstate").exists());

    // DEPLOY applies the stored plan.
    let deploy = job(
        dir.path(),
        "deploy.json",
        "DEPLOY",
        snapshot(),
        local_tendril(dir.path(), "basic"),
    );
    let (_, sink) = collect();
    let applied = succeeded(deploy_no_cluster(&deploy, &sink, &never).await);
    assert_eq!(applied.plan_job_id.as_deref(), Some(PLAN_ID));
    let changes = applied.change_summary.as_ref().unwrap();
    assert_eq!((changes.add, changes.applied), (2, true));
    assert_eq!(applied.outputs["name"], "shop-prod-eu-west-1");
    assert_eq!(applied.outputs["db_credentials"], "[redacted]");
    let text = serde_json::to_string(&applied).unwrap();
    assert!(!text.contains("s3cret-shop"), "{text}");
    assert!(!format!("{applied:?}").contains("s3cret-shop"));
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/terraform.tfstate")).unwrap())
            .unwrap();
    assert_eq!(state["resources"].as_array().unwrap().len(), 2);
    assert_eq!(
        applied.timings.iter().map(|t| t.phase).collect::<Vec<_>>(),
        tendril::pipeline::deploy::PHASES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_to_supabase_and_deploy_with_state_in_the_s3_bucket() {
    if !terraform_available() {
        return;
    }
    let moto = Moto::start();
    let resp = reqwest::Client::new()
        .put(format!("{}/vine-terraform-state", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let storage = SupabaseStorage::start("sb-service-key");
    storage.create_bucket("plan-artifacts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("service-key"), "sb-service-key\n").unwrap();
    let tendril = json!({
        "terraform": {"workdir": fixture("eks"), "backend": {
            "endpoint": moto.endpoint(), "region": "eu-west-1",
            // Separate state-store keys: they reach terraform only through a
            // credentials file named in its environment.
            "access_key_id": STATE_KEY_ID, "secret_access_key": {"file": "state-secret"}}},
        "artifacts": {"store": "supabase", "url": storage.url(), "service_key": {"file": "service-key"}},
    });
    std::fs::write(dir.path().join("state-secret"), STATE_SECRET).unwrap();
    let never = CancellationToken::new();
    let plan_job = job(dir.path(), "plan.json", "PLAN", snapshot(), tendril.clone());
    let (_, sink) = collect();
    let report = succeeded(plan::run_plan(&plan_job, &sink, &never).await);
    assert_eq!(report.change_summary.as_ref().unwrap().add, 4);
    assert!(
        storage
            .object("plan-artifacts", &format!("{PLAN_ID}/plan.tfplan"))
            .is_some()
    );
    // The saved plan carries the backend settings (the profile name) but
    // neither the state-store keys nor the credentials file's path.
    let plan_bytes = storage
        .object("plan-artifacts", &format!("{PLAN_ID}/plan.tfplan"))
        .unwrap();
    let plan_text = unzipped_text(dir.path(), &plan_bytes);
    assert!(
        plan_text.contains("tendril-state"),
        "backend profile not found in the plan"
    );
    for leak in [STATE_KEY_ID, STATE_SECRET, "state-credentials"] {
        assert!(
            !plan_text.contains(leak),
            "{leak} is stored in the saved plan"
        );
    }

    let deploy = job(dir.path(), "deploy.json", "DEPLOY", snapshot(), tendril);
    let (events, sink) = collect();
    let applied = succeeded(deploy_no_cluster(&deploy, &sink, &never).await);
    assert_eq!(applied.change_summary.as_ref().unwrap().add, 4);
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        JobEvent::Terraform(tendril::terraform::Event::ApplyComplete { address, .. }) if address == "terraform_data.eks"
    )));
    let o = &applied.outputs;
    assert_eq!(o["eks_cluster_name"], "shop-prod");
    assert_eq!(
        o["eks_cluster_arn"],
        "arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod"
    );
    assert_eq!(applied.cluster.as_ref().unwrap().name, "shop-prod");
    for name in [
        "eks_cluster_endpoint",
        "eks_cluster_certificate_authority_data",
        "rds_cluster_endpoint",
        "redis_primary_endpoint_address",
        "redis_reader_endpoint_address",
        "vpc_id",
    ] {
        assert!(o[name].as_str().is_some_and(|v| !v.is_empty()), "{name}");
    }
    assert_eq!(o["rds_master_credentials_secret_arn"], "[redacted]");
    let text = serde_json::to_string(&applied).unwrap();
    assert!(!text.contains("secretsmanager"), "{text}");

    // The state is in the bucket under the default key layout.
    let store = S3Store::new(
        "vine-terraform-state",
        "eu-west-1",
        Some(&moto.endpoint()),
        "",
        S3Credentials {
            access_key_id: moto::ACCESS_KEY_ID.into(),
            secret_access_key: Secret::new(moto::SECRET_ACCESS_KEY.into()),
            session_token: None,
        },
    )
    .unwrap();
    let state = store
        .get_object("vy1/shop/prod/eu-west-1/terraform.tfstate", 1 << 24)
        .await
        .unwrap();
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["resources"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_is_refused_before_terraform_starts() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();
    let plan_job = job(
        dir.path(),
        "plan.json",
        "PLAN",
        snapshot(),
        local_tendril(dir.path(), "basic"),
    );
    let (_, sink) = collect();
    succeeded(plan::run_plan(&plan_job, &sink, &never).await);

    // The vine's configuration changed after planning; terraform is a tripwire.
    let (tripwire, marker) = tripwire(dir.path());
    let mut changed = snapshot();
    changed["cluster"]["node_min_size"] = json!(3);
    let mut tendril = local_tendril(dir.path(), "basic");
    tendril["terraform"]["binary"] = json!(tripwire);
    let deploy = job(
        dir.path(),
        "deploy.json",
        "DEPLOY",
        changed,
        tendril.clone(),
    );
    let report = deploy_no_cluster(&deploy, &sink, &never).await;
    failed_in(&report, Phase::ConfigHash);
    assert_eq!(
        report.error_without_phase().as_deref(),
        Some("Configuration has changed since the plan was generated. Please re-plan.")
    );
    assert!(
        !marker.exists(),
        "terraform was started despite the changed configuration"
    );

    // The same configuration with 2.0 instead of 2 is the same configuration.
    let mut same = snapshot();
    same["cluster"]["node_min_size"] = json!(2.0);
    let deploy = job(dir.path(), "deploy2.json", "DEPLOY", same, tendril);
    let report = deploy_no_cluster(&deploy, &sink, &never).await;
    failed_in(&report, Phase::TerraformInit);
    assert!(
        marker.exists(),
        "the hash check passed, so terraform (the tripwire) ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_artifact_is_refused_by_its_digest() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();
    let plan_job = job(
        dir.path(),
        "plan.json",
        "PLAN",
        snapshot(),
        local_tendril(dir.path(), "basic"),
    );
    let (_, sink) = collect();
    succeeded(plan::run_plan(&plan_job, &sink, &never).await);
    let plan_path = dir
        .path()
        .join("artifacts")
        .join(PLAN_ID)
        .join("plan.tfplan");
    let mut bytes = std::fs::read(&plan_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&plan_path, &bytes).unwrap();

    let (tripwire, marker) = tripwire(dir.path());
    let mut tendril = local_tendril(dir.path(), "basic");
    tendril["terraform"]["binary"] = json!(tripwire);
    let deploy = job(dir.path(), "deploy.json", "DEPLOY", snapshot(), tendril);
    let report = deploy_no_cluster(&deploy, &sink, &never).await;
    let err = failed_in(&report, Phase::Artifact);
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains("sha256"), "{err}");
    assert!(!marker.exists());

    std::fs::write(&plan_path, &bytes[..mid]).unwrap();
    let report = deploy_no_cluster(&deploy, &sink, &never).await;
    let err = failed_in(&report, Phase::Artifact);
    assert!(err.contains("truncated"), "{err}");
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_after_the_state_moved_reports_a_stale_plan() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();
    let (_, sink) = collect();
    let tendril = local_tendril(dir.path(), "basic");
    let plan_job = job(dir.path(), "plan.json", "PLAN", snapshot(), tendril.clone());
    succeeded(plan::run_plan(&plan_job, &sink, &never).await);
    let deploy = job(dir.path(), "deploy.json", "DEPLOY", snapshot(), tendril);
    succeeded(deploy_no_cluster(&deploy, &sink, &never).await);
    // The same plan again: the state changed since it was made.
    let report = deploy_no_cluster(&deploy, &sink, &never).await;
    let err = failed_in(&report, Phase::TerraformApply);
    assert!(err.contains("stale"), "{err}");
}

#[tokio::test]
async fn a_job_hash_that_does_not_match_its_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tripwire, marker) = tripwire(dir.path());
    let mut tendril = local_tendril(dir.path(), "basic");
    tendril["terraform"]["binary"] = json!(tripwire);
    let mut j = job(dir.path(), "plan.json", "PLAN", snapshot(), tendril);
    j.job.config_hash = Some(ConfigHash::of(&json!({"other": true})).to_string());
    let (_, sink) = collect();
    let report = plan::run_plan(&j, &sink, &CancellationToken::new()).await;
    let err = failed_in(&report, Phase::Preflight);
    assert!(
        err.contains("job.config_hash") && err.contains("queue the job again"),
        "{err}"
    );
    assert!(!marker.exists());
    // With the right hash it goes on to terraform.
    j.job.config_hash = Some(ConfigHash::of(&snapshot()).to_string());
    let report = plan::run_plan(&j, &sink, &CancellationToken::new()).await;
    failed_in(&report, Phase::TerraformInit);
    assert!(marker.exists());
}

fn tendril_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tendril"))
}

#[test]
fn cli_plan_prints_a_json_report_and_a_human_summary() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "plan.json",
        "PLAN",
        snapshot(),
        local_tendril(dir.path(), "eks"),
    );
    let out = tendril_cmd()
        .args(["plan", "--job"])
        .arg(dir.path().join("plan.json"))
        .args(["--output", "json"])
        // A stray CLI config in tendril's environment must not reach terraform.
        .env("TF_CLI_CONFIG_FILE", dir.path().join("missing.tfrc"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    tendril_testkit::report_schema::assert_valid_report(&report);
    assert_eq!(report["status"], "SUCCESS");
    assert_eq!(report["job_type"], "PLAN");
    assert_eq!(report["job_id"], PLAN_ID);
    assert_eq!(report["change_summary"]["add"], 4);
    assert_eq!(
        report["config_hash"],
        ConfigHash::of(&snapshot()).to_string()
    );
    assert!(
        stderr.contains("terraform planned: 4 to add, 0 to change, 0 to destroy"),
        "{stderr}"
    );
    assert!(!stderr.contains("CLI configuration"), "{stderr}");

    // A DEPLOY job file is refused by `tendril plan` with a clear message.
    job(
        dir.path(),
        "deploy.json",
        "DEPLOY",
        snapshot(),
        local_tendril(dir.path(), "eks"),
    );
    let out = tendril_cmd()
        .args(["plan", "--job"])
        .arg(dir.path().join("deploy.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job.job_type") && stderr.contains("tendril deploy"),
        "{stderr}"
    );
}

#[test]
fn cli_plan_is_cancelled_by_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // terraform behind a wrapper whose `plan` first waits a long time, so the
    // signal arrives while terraform's process group is busy.
    let wrapper = dir.path().join("slow-plan-terraform");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = plan ]; then echo waiting-before-plan; sleep 600; fi\nexec terraform \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut tendril = local_tendril(dir.path(), "basic");
    tendril["terraform"]["binary"] = json!(wrapper);
    job(dir.path(), "plan.json", "PLAN", snapshot(), tendril);
    let mut child = tendril_cmd()
        .args(["plan", "--output", "json", "--job"])
        .arg(dir.path().join("plan.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        // without a terminal, the line after init is the end of init: plan is running
        if line.contains("terraform init ok in") {
            break;
        }
    }
    // Give the wrapper a moment to reach its sleep, then ask tendril to stop.
    std::thread::sleep(Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let all = format!("{}\n{}", seen.join("\n"), rest.join("\n"));
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("CANCELLED"), "{all}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["status"], "CANCELLED");
    assert_eq!(doc["failed_phase"], "terraform_plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_deploy_apply_ends_cancelled_in_the_apply_phase() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();
    let (_, sink) = collect();
    let mut snap = snapshot();
    snap["sleep_seconds"] = json!(600);
    let tendril = local_tendril(dir.path(), "slow");
    let plan_job = job(
        dir.path(),
        "plan.json",
        "PLAN",
        snap.clone(),
        tendril.clone(),
    );
    succeeded(plan::run_plan(&plan_job, &sink, &never).await);

    let deploy = job(dir.path(), "deploy.json", "DEPLOY", snap, tendril);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let sink = move |e: JobEvent| {
        if let JobEvent::Terraform(tendril::terraform::Event::Provisioner {
            output: Some(line),
            ..
        }) = &e
            && line.trim() == "started-sleeping"
        {
            trigger.cancel();
        }
    };
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        deploy_no_cluster(&deploy, &sink, &cancel),
    )
    .await
    .expect("the apply stopped after cancellation");
    assert_eq!(report.status, JobStatus::Cancelled, "{:?}", report.error);
    assert_eq!(report.failed_phase, Some(Phase::TerraformApply));
    // terraform wrote the state before stopping: `first` is recorded.
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/terraform.tfstate")).unwrap())
            .unwrap();
    let names: Vec<&str> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"first"), "{names:?}");
}
