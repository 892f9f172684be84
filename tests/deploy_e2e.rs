//! The DEPLOY job end to end: a PLAN job through the library (real terraform,
//! local backend and artifact store in a temp dir), then `run_deploy` against
//! the cluster of `tendril_testkit::e2e` (the in-repo API server, or the real
//! cluster `TENDRIL_E2E_KUBECONFIG` names).
//!
//! The in-repo server has no controllers; where a test needs the Argo CD
//! workloads ready it runs [`fake_controllers`], which writes Deployment and
//! StatefulSet status through the status subresource the way the
//! Deployment/StatefulSet controllers do. Against a real cluster the real
//! controllers do that and the task is not started.
//!
//! Each test prints a loud SKIPPED line when terraform is not on PATH.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tendril::job::JobFile;
use tendril::pipeline::deploy::{self, DeployOptions};
use tendril::pipeline::phases::preflight::KubeconfigRef;
use tendril::pipeline::plan;
use tendril::pipeline::{JobEvent, JobReport, JobStatus, Phase, PhaseOutcome};
use tendril_testkit::e2e::{self, TestCluster};
use tokio_util::sync::CancellationToken;

const PLAN_ID: &str = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
const DEPLOY_ID: &str = "3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10";
const STALE: &str = "Configuration has changed since the plan was generated. Please re-plan.";

fn terraform_available() -> bool {
    let ok = std::process::Command::new("terraform")
        .arg("version")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this DEPLOY test did not run !!!!!!!!\n"
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
    json!({"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws",
           "repositories": {"apps_destination_repo": "https://github.com/acme/shop-apps.git", "apps_path": "apps"}})
}

/// One test's world: a temp dir with the state, the artifacts and the job
/// files, and the Argo CD namespace.
struct World {
    dir: tempfile::TempDir,
    tf_config: PathBuf,
    namespace: String,
}

impl World {
    fn new(tf_fixture: &str, namespace: &str) -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            tf_config: fixture(tf_fixture),
            namespace: namespace.to_string(),
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/terraform.tfstate")
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The job's `tendril` part; `extra` is merged over it (one level deep
    /// per top-level key).
    fn tendril(&self, extra: &Value) -> Value {
        let mut t = json!({
            "terraform": {"workdir": self.tf_config, "backend": {"local": {"path": self.state_file()}}},
            "artifacts": {"store": "local", "dir": self.dir.path().join("artifacts")},
            "argocd": {"namespace": self.namespace, "timeout": "120s"},
            "apps": {"revision": "main"},
        });
        if let Some(map) = extra.as_object() {
            for (k, v) in map {
                match (t.get_mut(k).and_then(Value::as_object_mut), v.as_object()) {
                    (Some(into), Some(from)) => {
                        for (k2, v2) in from {
                            into.insert(k2.clone(), v2.clone());
                        }
                    }
                    _ => t[k] = v.clone(),
                }
            }
        }
        t
    }

    fn job(&self, job_type: &str, snapshot: Value, extra: &Value) -> JobFile {
        let mut j = json!({
            "job": {"id": if job_type == "PLAN" { PLAN_ID } else { DEPLOY_ID }, "job_type": job_type,
                    "vine_id": "6a1d2b3c", "vineyard_id": "91be0000", "config_snapshot": snapshot},
            "cloud_identity": {"provider": "local"},
            "tendril": self.tendril(extra),
        });
        if job_type == "DEPLOY" {
            j["job"]["plan_job_id"] = json!(PLAN_ID);
        }
        let path = self
            .dir
            .path()
            .join(format!("{}.json", job_type.to_lowercase()));
        std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
        JobFile::load(&path).unwrap()
    }

    /// Runs the PLAN job through the library (stores the artifact).
    async fn plan(&self) {
        let job = self.job("PLAN", snapshot(), &json!({}));
        let sink = |_: JobEvent| {};
        let report = plan::run_plan(&job, &sink, &CancellationToken::new()).await;
        assert_eq!(
            report.status,
            JobStatus::Success,
            "PLAN failed: {:?}",
            report.error
        );
    }

    fn deploy_job(&self, extra: &Value) -> JobFile {
        self.job("DEPLOY", snapshot(), extra)
    }
}

fn options(cluster: &TestCluster) -> DeployOptions {
    DeployOptions {
        kubeconfig: Some(KubeconfigRef {
            path: cluster.kubeconfig_path().to_path_buf(),
            context: None,
        }),
        lb_wait: Duration::from_secs(2),
        ..DeployOptions::default()
    }
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<JobEvent>>>);

impl Events {
    fn sink(&self) -> impl Fn(JobEvent) + Send + Sync + 'static {
        let inner = self.0.clone();
        move |e| inner.lock().unwrap().push(e)
    }
    fn all(&self) -> Vec<JobEvent> {
        self.0.lock().unwrap().clone()
    }
}

async fn run(job: &JobFile, opts: &DeployOptions) -> (JobReport, Vec<JobEvent>) {
    let events = Events::default();
    let sink = events.sink();
    let report = deploy::run_deploy(job, opts, &sink, &CancellationToken::new()).await;
    report_json(&report);
    (report, events.all())
}

/// Stands in for the Deployment and StatefulSet controllers on the in-repo
/// server: every workload in `ns` whose status lags its generation gets the
/// status those controllers write once all pods are up. Not started on a
/// real cluster (the real controllers run there).
fn fake_controllers(cluster: &TestCluster, ns: &str) -> Option<tokio::task::JoinHandle<()>> {
    if cluster.is_real() {
        return None;
    }
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(cluster.client(), ns);
    Some(tokio::spawn(async move {
        let pp = PatchParams::default();
        loop {
            if let Ok(list) = deployments.list(&ListParams::default()).await {
                for d in list.items {
                    let generation = d.metadata.generation.unwrap_or(1);
                    let observed = d.status.as_ref().and_then(|s| s.observed_generation);
                    if observed == Some(generation) {
                        continue;
                    }
                    let r = d.spec.replicas.unwrap_or(1);
                    let status = json!({"status": {
                    "observedGeneration": generation, "replicas": r, "updatedReplicas": r,
                    "readyReplicas": r, "availableReplicas": r,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."},
                    ]}});
                    let name = d.metadata.name.unwrap_or_default();
                    let _ = deployments
                        .patch_status(&name, &pp, &Patch::Merge(&status))
                        .await;
                }
            }
            if let Ok(list) = statefulsets.list(&ListParams::default()).await {
                for s in list.items {
                    let generation = s.metadata.generation.unwrap_or(1);
                    let observed = s.status.as_ref().and_then(|s| s.observed_generation);
                    if observed == Some(generation) {
                        continue;
                    }
                    let r = s.spec.replicas.unwrap_or(1);
                    let name = s.metadata.name.unwrap_or_default();
                    let revision = format!("{name}-{generation}");
                    let status = json!({"status": {
                        "observedGeneration": generation, "replicas": r, "readyReplicas": r,
                        "currentReplicas": r, "updatedReplicas": r, "availableReplicas": r,
                        "currentRevision": revision, "updateRevision": revision}});
                    let _ = statefulsets
                        .patch_status(&name, &pp, &Patch::Merge(&status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }))
}

/// The name of an Argo CD namespace that does not exist yet: the deploy must
/// create it. Deleted at the end of the test.
struct ArgoNamespace {
    name: String,
    client: kube::Client,
}

impl ArgoNamespace {
    async fn new(cluster: &TestCluster, prefix: &str) -> ArgoNamespace {
        let name = e2e::unique_name(prefix);
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
        assert!(
            namespaces.get_opt(&name).await.unwrap().is_none(),
            "the Argo CD namespace must not exist before the deploy"
        );
        ArgoNamespace {
            name,
            client: cluster.client(),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn delete(self) {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client);
        // Best effort: a failed deploy may not have created it.
        let _ = namespaces.delete(&self.name, &Default::default()).await;
    }
}

fn argo_api(cluster: &TestCluster, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    Api::namespaced_with(
        cluster.client(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

async fn secret_data(cluster: &TestCluster, ns: &str, name: &str, key: &str) -> Option<String> {
    let secrets: Api<KubeSecret> = Api::namespaced(cluster.client(), ns);
    let s = secrets.get_opt(name).await.unwrap()?;
    let bytes = s.data?.get(key)?.0.clone();
    Some(String::from_utf8(bytes).unwrap())
}

fn assert_phases_in_order(report: &JobReport, upto: Phase, last: PhaseOutcome) {
    let got: Vec<Phase> = report.timings.iter().map(|t| t.phase).collect();
    let n = deploy::PHASES.iter().position(|p| *p == upto).unwrap() + 1;
    assert_eq!(got, deploy::PHASES[..n].to_vec(), "phases run: {got:?}");
    for t in &report.timings[..n - 1] {
        assert_eq!(t.outcome, PhaseOutcome::Ok, "{:?}", t.phase);
    }
    assert_eq!(report.timings[n - 1].outcome, last);
}

fn report_json(report: &JobReport) -> Value {
    let v = serde_json::to_value(report).unwrap();
    tendril_testkit::report_schema::assert_valid_report(&v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_succeeds_end_to_end() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-ok").await;
    let world = World::new("eks", ns.name());
    world.plan().await;
    let controllers = fake_controllers(&cluster, ns.name());
    let job = world.deploy_job(&json!({"argocd": {"namespace": ns.name(), "timeout": "120s", "admin_password": "correct horse battery"}}));
    let mut opts = options(&cluster);
    opts.output_dir = Some(world.out_dir());
    let (report, events) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    assert!(report.error.is_none() && report.failed_phase.is_none());
    assert_phases_in_order(&report, Phase::Report, PhaseOutcome::Ok);
    assert!(report.diagnostics.is_empty());

    // terraform's per-resource events came through live
    let applied: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Terraform(tendril::terraform::Event::ApplyComplete { address, .. }) => {
                Some(address.clone())
            }
            _ => None,
        })
        .collect();
    assert!(
        applied.contains(&"terraform_data.eks".to_string()),
        "{applied:?}"
    );
    assert_eq!(report.change_summary.as_ref().unwrap().add, 4);

    // cluster facts
    let c = report.cluster.as_ref().unwrap();
    assert_eq!(c.name, "shop-prod");
    assert_eq!(
        c.arn.as_deref(),
        Some("arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod")
    );
    assert_eq!(
        c.endpoint.as_deref(),
        Some("https://ABC123DEF456.gr7.eu-west-1.eks.amazonaws.com")
    );

    // sensitive outputs are redacted everywhere in the report
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        report.outputs["rds_master_credentials_secret_arn"],
        "[redacted]"
    );
    assert!(
        !text.contains("secret:rds!cluster-shop-prod"),
        "sensitive output leaked: {text}"
    );
    assert_eq!(report.outputs["eks_cluster_name"], "shop-prod");

    // Argo CD: known password, in-cluster URL with a note, objects created
    let argocd = report.argocd.as_ref().unwrap();
    assert_eq!(
        argocd.admin_password.as_ref().map(|p| p.expose().as_str()),
        Some("correct horse battery")
    );
    assert_eq!(
        argocd.url,
        format!("https://argocd-server.{}.svc", ns.name())
    );
    assert!(argocd.note.is_some());
    assert!(
        argocd.objects.get("created").copied().unwrap_or(0) > 20,
        "{:?}",
        argocd.objects
    );

    // execution_metadata in the worker API's shape
    let m = &report.execution_metadata;
    assert_eq!(m["cluster_name"], "shop-prod");
    assert_eq!(
        m["cluster_endpoint"],
        "https://ABC123DEF456.gr7.eu-west-1.eks.amazonaws.com"
    );
    assert_eq!(m["argocd_url"], json!(argocd.url));
    assert_eq!(m["argocd_admin_password"], "correct horse battery");
    assert_eq!(
        m["outputs"]["rds_master_credentials_secret_arn"],
        "[redacted]"
    );
    assert_eq!(m["databases"][0]["credentials_secret_arn"], "[redacted]");
    assert_eq!(
        m["caches"][0]["primary_endpoint"],
        "master.shop-prod-sessions.abc123.euw1.cache.amazonaws.com"
    );
    for phase in deploy::PHASES {
        assert!(
            m["timings_ms"].get(phase.name()).is_some(),
            "timings_ms.{phase}"
        );
    }

    // what is in the cluster
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    deployments.get("argocd-server").await.unwrap();
    let redis = secret_data(&cluster, ns.name(), "argocd-redis", "auth")
        .await
        .unwrap();
    assert!(redis.len() >= 16);
    let hash = secret_data(&cluster, ns.name(), "argocd-secret", "admin.password")
        .await
        .unwrap();
    assert!(hash.starts_with("$2"), "admin.password is a bcrypt hash");
    assert!(bcrypt::verify("correct horse battery", &hash).unwrap());
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    for crd in [
        "applications.argoproj.io",
        "appprojects.argoproj.io",
        "applicationsets.argoproj.io",
    ] {
        crds.get(crd)
            .await
            .unwrap_or_else(|e| panic!("CRD {crd}: {e}"));
    }
    let root = argo_api(&cluster, ns.name(), "Application")
        .get("root")
        .await
        .unwrap();
    assert_eq!(
        root.data["spec"]["source"]["repoURL"],
        "https://github.com/acme/shop-apps.git"
    );
    assert_eq!(root.data["spec"]["source"]["path"], "apps");
    let lbc = argo_api(&cluster, ns.name(), "Application")
        .get("aws-load-balancer-controller")
        .await
        .unwrap();
    assert_eq!(
        lbc.data["spec"]["source"]["helm"]["valuesObject"]["clusterName"],
        "shop-prod"
    );
    argo_api(&cluster, ns.name(), "AppProject")
        .get("platform")
        .await
        .unwrap();

    // the output directory: manifests, kubeconfig, report
    let out = world.out_dir();
    for f in [
        "argocd.yaml",
        "app-of-apps.yaml",
        "kubeconfig",
        "report.json",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(written["status"], "SUCCESS");
    let manifests = std::fs::read_to_string(out.join("argocd.yaml")).unwrap();
    assert!(
        !manifests.contains(&redis),
        "the Redis password is not written to disk"
    );

    if let Some(c) = controllers {
        c.abort();
    }
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_outputs_are_included_when_asked() {
    if !terraform_available() {
        return;
    }
    let world = World::new("eks", "argocd");
    world.plan().await;
    // no cluster: terraform applies, the manifests are only rendered
    let job = world.deploy_job(&json!({}));
    let opts = DeployOptions {
        no_cluster: true,
        include_sensitive_outputs: true,
        ..DeployOptions::default()
    };
    let (report, _) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    assert_eq!(
        report.outputs["rds_master_credentials_secret_arn"],
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-shop-prod-AbCdEf"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_plan_stops_before_terraform() {
    if !terraform_available() {
        return;
    }
    let world = World::new("eks", "argocd");
    world.plan().await;
    let mut changed = snapshot();
    changed["region"] = json!("eu-central-1");
    let job = world.job("DEPLOY", changed, &json!({}));
    let opts = DeployOptions {
        no_cluster: true,
        ..DeployOptions::default()
    };
    let (report, events) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::ConfigHash));
    let error = report.error.as_deref().unwrap();
    assert!(error.contains(STALE), "{error}");
    assert_phases_in_order(&report, Phase::ConfigHash, PhaseOutcome::Failed);
    assert!(!world.state_file().exists(), "terraform never ran");
    assert!(
        !events.iter().any(|e| matches!(e, JobEvent::Terraform(_))),
        "no terraform events"
    );
    assert_eq!(report_json(&report)["failed_phase"], "config_hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_failure_names_the_resource_and_keeps_state() {
    if !terraform_available() {
        return;
    }
    let world = World::new("failing", "argocd");
    world.plan().await;
    let job = world.deploy_job(&json!({}));
    let opts = DeployOptions {
        no_cluster: true,
        ..DeployOptions::default()
    };
    let (report, _) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::TerraformApply));
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("terraform_data.broken"), "{error}");
    assert_phases_in_order(&report, Phase::TerraformApply, PhaseOutcome::Failed);
    // the resource that succeeded is in the kept state
    let state: Value = serde_json::from_slice(&std::fs::read(world.state_file()).unwrap()).unwrap();
    let names: Vec<&str> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"ok"), "state kept: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argocd_not_ready_fails_with_diagnostics() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-slow").await;
    let world = World::new("eks", ns.name());
    world.plan().await;
    // no controller: nothing becomes ready on the test server; on a real
    // cluster 3 s is too short for Argo CD's images to start.
    let job = world.deploy_job(&json!({"argocd": {"namespace": ns.name(), "timeout": "3s"}}));
    let (report, _) = run(&job, &options(&cluster)).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::ArgoCd));
    assert_phases_in_order(&report, Phase::ArgoCd, PhaseOutcome::Failed);
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("argocd-server"), "{error}");
    assert!(error.contains("not ready"), "{error}");
    let server = report
        .diagnostics
        .iter()
        .find(|d| d.object.contains("Deployment") && d.object.contains("argocd-server"))
        .unwrap_or_else(|| panic!("diagnostics: {:?}", report.diagnostics));
    assert_eq!(server.state, "not_ready");
    assert!(!server.reason.is_empty());
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.object.contains("StatefulSet")),
        "{:?}",
        report.diagnostics
    );
    assert!(report_json(&report)["diagnostics"].is_array());
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_deploy_is_idempotent() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-again").await;
    let world = World::new("eks", ns.name());
    let controllers = fake_controllers(&cluster, ns.name());
    let extra = json!({"argocd": {"namespace": ns.name(), "timeout": "120s", "admin_password": "s3cret-admin"}});
    world.plan().await;
    let (first, _) = run(&world.deploy_job(&extra), &options(&cluster)).await;
    assert_eq!(first.status, JobStatus::Success, "{:?}", first.error);

    let redis = secret_data(&cluster, ns.name(), "argocd-redis", "auth")
        .await
        .unwrap();
    let hash = secret_data(&cluster, ns.name(), "argocd-secret", "admin.password")
        .await
        .unwrap();
    let mtime = secret_data(&cluster, ns.name(), "argocd-secret", "admin.passwordMtime")
        .await
        .unwrap();

    // Argo CD writes its own key with its own field manager
    let secrets: Api<KubeSecret> = Api::namespaced(cluster.client(), ns.name());
    let own = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret"},
                     "stringData": {"server.secretkey": "argo-made-this"}});
    secrets
        .patch(
            "argocd-secret",
            &PatchParams::apply("argocd-server"),
            &Patch::Apply(&own),
        )
        .await
        .unwrap();

    // the same job again (a saved plan is single-use: PLAN again first)
    world.plan().await;
    let (second, _) = run(&world.deploy_job(&extra), &options(&cluster)).await;
    assert_eq!(second.status, JobStatus::Success, "{:?}", second.error);
    let objects = &second.argocd.as_ref().unwrap().objects;
    assert_eq!(
        objects.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["unchanged"],
        "every Argo CD object unchanged: {objects:?}"
    );
    assert_eq!(
        secret_data(&cluster, ns.name(), "argocd-redis", "auth")
            .await
            .unwrap(),
        redis
    );
    assert_eq!(
        secret_data(&cluster, ns.name(), "argocd-secret", "admin.password")
            .await
            .unwrap(),
        hash
    );
    assert_eq!(
        secret_data(&cluster, ns.name(), "argocd-secret", "admin.passwordMtime")
            .await
            .unwrap(),
        mtime
    );
    assert_eq!(
        secret_data(&cluster, ns.name(), "argocd-secret", "server.secretkey")
            .await
            .as_deref(),
        Some("argo-made-this")
    );
    if let Some(c) = controllers {
        c.abort();
    }
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argocd_upgrade_that_drops_objects_prunes_them() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-prune").await;
    let world = World::new("eks", ns.name());
    let controllers = fake_controllers(&cluster, ns.name());
    world.plan().await;
    let first = json!({"argocd": {"namespace": ns.name(), "timeout": "120s"}});
    let (report, _) = run(&world.deploy_job(&first), &options(&cluster)).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    assert!(
        deployments
            .get_opt("argocd-dex-server")
            .await
            .unwrap()
            .is_some()
    );

    // The same chart without Dex: its objects leave the bundle and are pruned.
    let without_dex = json!({"argocd": {"namespace": ns.name(), "timeout": "120s",
        "values": {"dex": {"enabled": false}}}});
    world.plan().await;
    let (report, _) = run(&world.deploy_job(&without_dex), &options(&cluster)).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    let objects = &report.argocd.as_ref().unwrap().objects;
    assert!(
        objects.get("pruned").copied().unwrap_or(0) >= 2,
        "{objects:?}"
    );
    assert!(
        deployments
            .get_opt("argocd-dex-server")
            .await
            .unwrap()
            .is_none(),
        "the Dex Deployment was pruned"
    );
    assert!(
        deployments
            .get_opt("argocd-server")
            .await
            .unwrap()
            .is_some()
    );
    if let Some(c) = controllers {
        c.abort();
    }
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_output_names_output_and_key() {
    if !terraform_available() {
        return;
    }
    let world = World::new("eks", "argocd");
    world.plan().await;
    let job = world.deploy_job(&json!({"outputs": {"cluster_name": "k8s_cluster_name"}}));
    let opts = DeployOptions {
        no_cluster: true,
        ..DeployOptions::default()
    };
    let (report, _) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::Outputs));
    assert_phases_in_order(&report, Phase::Outputs, PhaseOutcome::Failed);
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("`k8s_cluster_name`"), "{error}");
    assert!(error.contains("`cluster_name`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_password_from_the_initial_secret_or_not_retrievable() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-admin").await;
    let world = World::new("eks", ns.name());
    let controllers = fake_controllers(&cluster, ns.name());
    world.plan().await;
    let (first, _) = run(&world.deploy_job(&json!({})), &options(&cluster)).await;
    // On a real cluster Argo CD itself creates the initial secret; the
    // not-retrievable half is checked only where nothing creates it.
    if !cluster.is_real() {
        assert_eq!(first.status, JobStatus::Success, "{:?}", first.error);
        let argocd = first.argocd.as_ref().unwrap();
        assert!(argocd.admin_password.is_none());
        assert!(
            first.warnings.iter().any(|w| w.contains("not retrievable")),
            "{:?}",
            first.warnings
        );
        // no hash of a preset password was written
        assert_eq!(
            secret_data(&cluster, ns.name(), "argocd-secret", "admin.password").await,
            None
        );

        // Argo CD writes the initial secret on its first start
        let secrets: Api<KubeSecret> = Api::namespaced(cluster.client(), ns.name());
        let initial: KubeSecret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "argocd-initial-admin-secret"},
            "stringData": {"password": "gen3rated-by-argo"}}))
        .unwrap();
        secrets
            .create(&PostParams::default(), &initial)
            .await
            .unwrap();
        world.plan().await;
        let (second, _) = run(&world.deploy_job(&json!({})), &options(&cluster)).await;
        assert_eq!(second.status, JobStatus::Success, "{:?}", second.error);
        assert_eq!(
            second
                .argocd
                .as_ref()
                .unwrap()
                .admin_password
                .as_ref()
                .map(|p| p.expose().as_str()),
            Some("gen3rated-by-argo")
        );
        assert!(
            !second
                .warnings
                .iter()
                .any(|w| w.contains("not retrievable"))
        );
    } else {
        assert_eq!(first.status, JobStatus::Success, "{:?}", first.error);
    }
    if let Some(c) = controllers {
        c.abort();
    }
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_job_secret_stops_the_job_before_terraform() {
    if !terraform_available() {
        return;
    }
    let world = World::new("eks", "argocd");
    world.plan().await;
    let job = world.deploy_job(&json!({"argocd": {"namespace": "argocd",
        "admin_password": {"env": "TENDRIL_TEST_SURELY_UNSET_ADMIN_PASSWORD"}}}));
    let opts = DeployOptions {
        no_cluster: true,
        ..DeployOptions::default()
    };
    let (report, _) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.failed_phase, Some(Phase::Preflight));
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("tendril.argocd.admin_password"), "{error}");
    assert!(
        error.contains("TENDRIL_TEST_SURELY_UNSET_ADMIN_PASSWORD"),
        "{error}"
    );
    assert!(!world.state_file().exists(), "terraform never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_with_a_cluster_changes_nothing_in_it() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-dry").await;
    let world = World::new("eks", ns.name());
    world.plan().await;
    let job = world.deploy_job(&json!({"argocd": {"namespace": ns.name(), "timeout": "120s"}}));
    let mut opts = options(&cluster);
    opts.dry_run = true;
    opts.output_dir = Some(world.out_dir());
    let (report, _) = run(&job, &opts).await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    assert!(report.is_dry_run());
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    assert!(
        deployments
            .get_opt("argocd-server")
            .await
            .unwrap()
            .is_none()
    );
    let secrets: Api<KubeSecret> = Api::namespaced(cluster.client(), ns.name());
    assert!(secrets.get_opt("argocd-redis").await.unwrap().is_none());
    assert!(world.out_dir().join("app-of-apps.yaml").is_file());
    ns.delete().await;
}

/// Not a test: measures the demo job against the in-repo API server with
/// pods made ready at once, through the real binary (so its peak memory is
/// tendril's alone). Run it in a release build:
///
/// ```text
/// cargo test --release --test deploy_e2e -- --ignored --nocapture measure_demo_against_test_server
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test; run with --ignored --nocapture in a release build"]
async fn measure_demo_against_test_server() {
    if !terraform_available() {
        return;
    }
    let cluster = e2e::cluster().await;
    let ns = ArgoNamespace::new(&cluster, "deploy-bench").await;
    let world = World::new("eks", ns.name());
    let controllers = fake_controllers(&cluster, ns.name());
    for round in ["first install", "re-deploy"] {
        world.plan().await;
        let job_path = world.dir.path().join("deploy.json");
        drop(world.deploy_job(&json!({"argocd": {"namespace": ns.name(), "timeout": "120s"}})));
        let kubeconfig = cluster.kubeconfig_path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("/usr/bin/time")
                .arg("-v")
                .arg(env!("CARGO_BIN_EXE_tendril"))
                .args(["deploy", "--output", "json", "--job"])
                .arg(&job_path)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        tendril_testkit::report_schema::assert_valid_report(&report);
        let rss = stderr
            .lines()
            .find(|l| l.contains("Maximum resident set size"))
            .unwrap_or("");
        let wall = stderr
            .lines()
            .find(|l| l.contains("Elapsed (wall clock)"))
            .unwrap_or("");
        eprintln!(
            "== {round}: timings_ms {}",
            report["execution_metadata"]["timings_ms"]
        );
        eprintln!("== {round}: argocd objects {}", report["argocd"]["objects"]);
        eprintln!("== {round}: {}; {}", rss.trim(), wall.trim());
    }
    if let Some(c) = controllers {
        c.abort();
    }
    ns.delete().await;
}
