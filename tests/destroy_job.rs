//! The DESTROY job end to end with the real terraform: a PLAN and a DEPLOY
//! create the state, the DESTROY tears down what the cluster created (on the
//! in-repo API server, or the cluster `TENDRIL_E2E_KUBECONFIG` names) and
//! destroys it. Every report is checked against the report schema.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tendril::job::JobFile;
use tendril::pipeline::deploy::{DeployOptions, run_deploy};
use tendril::pipeline::destroy::{self, DestroyOptions, run_destroy};
use tendril::pipeline::phases::preflight::KubeconfigRef;
use tendril::pipeline::plan::run_plan;
use tendril::pipeline::{JobEvent, JobReport, JobStatus, Phase, PhaseOutcome};
use tendril_testkit::e2e;
use tendril_testkit::report_schema::assert_valid_report;
use tokio_util::sync::CancellationToken;

const PLAN_ID: &str = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
const DEPLOY_ID: &str = "3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10";
const DESTROY_ID: &str = "7c2e9f10-5d2f-4e3a-9c1b-7f6e5d4c3b2a";

fn terraform_available() -> bool {
    let ok = std::process::Command::new("terraform")
        .arg("version")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this DESTROY test did not run !!!!!!!!\n"
        );
    }
    ok
}

/// One test's vine: state, artifacts and job files in a temp dir.
struct Vine {
    dir: tempfile::TempDir,
    fixture: &'static str,
    snapshot: Value,
}

impl Vine {
    fn new(fixture: &'static str, snapshot: Value) -> Vine {
        Vine {
            dir: tempfile::tempdir().unwrap(),
            fixture,
            snapshot,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn job(&self, id: &str, job_type: &str, extra: Value) -> JobFile {
        let mut tendril = json!({
            "terraform": {
                "workdir": Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform").join(self.fixture),
                "backend": {"local": {"path": self.path("state/terraform.tfstate")}}},
            "artifacts": {"store": "local", "dir": self.path("artifacts")},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            tendril[k] = v;
        }
        let mut j = json!({
            "job": {"id": id, "job_type": job_type, "vine_id": "6a1d2b3c", "vineyard_id": "91be0000",
                    "config_snapshot": self.snapshot},
            "cloud_identity": {"provider": "local"},
            "tendril": tendril,
        });
        if job_type == "DEPLOY" {
            j["job"]["plan_job_id"] = json!(PLAN_ID);
        }
        let path = self.path(&format!("{}.json", job_type.to_lowercase()));
        std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
        JobFile::load(&path).unwrap()
    }

    /// PLAN then DEPLOY (cluster left alone): the state has the resources.
    async fn deployed(&self) {
        let sink = |_: JobEvent| {};
        let never = CancellationToken::new();
        let plan = run_plan(&self.job(PLAN_ID, "PLAN", json!({})), &sink, &never).await;
        assert_eq!(plan.status, JobStatus::Success, "{:?}", plan.error);
        let opts = DeployOptions {
            no_cluster: true,
            ..DeployOptions::default()
        };
        let deploy = run_deploy(
            &self.job(DEPLOY_ID, "DEPLOY", json!({})),
            &opts,
            &sink,
            &never,
        )
        .await;
        assert_eq!(deploy.status, JobStatus::Success, "{:?}", deploy.error);
        assert!(self.resources() > 0);
    }

    /// Resources in the state file.
    fn resources(&self) -> usize {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.path("state/terraform.tfstate")).unwrap())
                .unwrap();
        state["resources"].as_array().map_or(0, Vec::len)
    }

    async fn destroy(&self, extra: Value, opts: &DestroyOptions) -> (JobReport, Vec<JobEvent>) {
        let events = std::sync::Mutex::new(Vec::new());
        let sink = |e: JobEvent| events.lock().unwrap().push(e);
        let report = run_destroy(
            &self.job(DESTROY_ID, "DESTROY", extra),
            opts,
            &sink,
            &CancellationToken::new(),
        )
        .await;
        assert_valid_report(&serde_json::to_value(&report).unwrap());
        (report, events.into_inner().unwrap())
    }
}

fn snapshot() -> Value {
    json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws"})
}

fn phases(report: &JobReport) -> Vec<(Phase, PhaseOutcome)> {
    report
        .timings
        .iter()
        .map(|t| (t.phase, t.outcome))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_without_the_cluster_empties_the_state_and_keeps_it() {
    if !terraform_available() {
        return;
    }
    let vine = Vine::new("basic", snapshot());
    vine.deployed().await;
    let before = vine.resources();
    let opts = DestroyOptions {
        no_cluster: true,
        ..DestroyOptions::default()
    };
    let (report, events) = vine.destroy(json!({}), &opts).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    assert_eq!(report.job_type, tendril::job::JobType::Destroy);
    let changes = report.change_summary.as_ref().unwrap();
    assert_eq!((changes.remove, changes.applied), (before as u64, true));
    assert_eq!(vine.resources(), 0, "everything in the state was destroyed");
    assert!(
        vine.path("state/terraform.tfstate").exists(),
        "the (empty) state stays for audit"
    );
    assert_eq!(
        report.timings.iter().map(|t| t.phase).collect::<Vec<_>>(),
        destroy::PHASES
    );
    assert!(phases(&report).contains(&(Phase::Teardown, PhaseOutcome::Skipped)));
    assert!(events.iter().any(|e| matches!(
        e,
        JobEvent::Terraform(tendril::terraform::Event::ApplyComplete { .. })
    )));
    // A second DESTROY finds nothing left and succeeds.
    let (again, _) = vine.destroy(json!({}), &opts).await;
    assert_eq!(again.status, JobStatus::Success, "{:?}", again.error);
    assert_eq!(again.change_summary.as_ref().unwrap().remove, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_is_gone_skips_the_teardown_with_a_warning() {
    if !terraform_available() {
        return;
    }
    let vine = Vine::new("basic", snapshot());
    vine.deployed().await;
    // a kubeconfig for a server that no longer answers (nothing listens there)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = vine.path("gone.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: false\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: gone}}\ncurrent-context: gone\nusers:\n- name: gone\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let opts = DestroyOptions {
        kubeconfig: Some(KubeconfigRef {
            path: kubeconfig,
            context: None,
        }),
        ..DestroyOptions::default()
    };
    let (report, _) = vine.destroy(json!({}), &opts).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("not reachable") && w.contains("teardown is skipped")),
        "{:?}",
        report.warnings
    );
    assert!(phases(&report).contains(&(Phase::Teardown, PhaseOutcome::Skipped)));
    assert_eq!(vine.resources(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destroy_is_resumed_by_a_second_run() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("guard-released");
    let mut snap = snapshot();
    snap["marker"] = json!(marker);
    let vine = Vine::new("guarded", snap);
    vine.deployed().await;
    let opts = DestroyOptions {
        no_cluster: true,
        ..DestroyOptions::default()
    };
    let (first, _) = vine.destroy(json!({}), &opts).await;
    assert_eq!(first.status, JobStatus::Failed);
    assert_eq!(first.failed_phase, Some(Phase::TerraformDestroy));
    let error = first.error.clone().unwrap_or_default();
    assert!(error.contains("terraform_data.guard"), "{error}");
    assert!(vine.resources() > 0, "the guard is still in the state");

    std::fs::write(&marker, "released").unwrap();
    let (second, _) = vine.destroy(json!({}), &opts).await;
    assert_eq!(second.status, JobStatus::Success, "{:?}", second.error);
    assert_eq!(vine.resources(), 0);
}

/// A LoadBalancer Service whose cloud load balancer is never released (a
/// finalizer nobody removes): the teardown waits, bounded, names it, and the
/// job stops before terraform destroy; once the finalizer is gone a second
/// run finishes. The test namespace is the teardown's whole scope, so other
/// objects of a real cluster are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_that_never_goes_away_stops_the_job_before_terraform_destroy() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("destroy-lb").await;
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ingress-lb", "finalizers": ["tendril.test/cloud-load-balancer"]},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}], "selector": {"app": "ingress"}},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();

    let vine = Vine::new("basic", snapshot());
    vine.deployed().await;
    let before = vine.resources();
    let opts = DestroyOptions {
        kubeconfig: Some(KubeconfigRef {
            path: cluster.kubeconfig_path().to_path_buf(),
            context: None,
        }),
        teardown_namespaces: Some(vec![ns.name().to_string()]),
        ..DestroyOptions::default()
    };
    let bounded = json!({"teardown": {"timeout": "3s"}, "argocd": {"namespace": ns.name()}});
    let started = std::time::Instant::now();
    let (report, _) = vine.destroy(bounded.clone(), &opts).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::Teardown));
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("ingress-lb") && error.contains("tendril.test/cloud-load-balancer"),
        "{error}"
    );
    assert!(error.contains("terraform destroy did not run"), "{error}");
    let torn = report
        .teardown
        .as_ref()
        .expect("the report carries the teardown");
    let remaining: Vec<_> = torn.remaining().map(|(o, _)| o.name.as_str()).collect();
    assert_eq!(remaining, ["ingress-lb"], "{}", torn.summary());
    assert_eq!(vine.resources(), before, "terraform destroy did not run");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the wait is bounded"
    );

    // the load balancer is released: the second run continues and finishes
    services
        .patch(
            "ingress-lb",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let (second, _) = vine.destroy(bounded, &opts).await;
    assert_eq!(second.status, JobStatus::Success, "{:?}", second.error);
    assert_eq!(vine.resources(), 0);
    ns.delete().await;
}
