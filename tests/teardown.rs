//! The teardown a DESTROY job runs before `terraform destroy`, against the
//! test API server, and unchanged against `TENDRIL_E2E_KUBECONFIG`'s cluster.
//!
//! Nothing plays Argo CD, the cloud controller or a volume provisioner
//! here, so the tests act as those controllers themselves, as the real ones
//! would, and only through the API:
//!
//! - **Argo CD** ([`ArgoCd`]): an Application with `deletionTimestamp` and
//!   Argo CD's resources finalizer gets its resources (ConfigMaps labelled
//!   with its name) deleted, then the finalizer removed. While it holds an
//!   Application it checks the teardown's order: the root one is the first
//!   to be deleted, and no Service, Ingress or PersistentVolumeClaim of the
//!   workload namespace is touched while an Application is still there.
//! - **the cloud controller**: a LoadBalancer Service carries a finalizer
//!   that the test removes (or, to see the bounded wait, never removes).
//! - **a volume provisioner**: a PersistentVolume with reclaim policy
//!   `Delete` is deleted by the test once its claim is gone.
//!
//! Every test works in namespaces it creates (the teardown's scope is those
//! namespaces), so it never touches another test's objects.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};
use tendril::apply::ObjectRef;
use tendril::appofapps::{
    self, AppOfApps, AppsSource, RESOURCES_FINALIZER, ROOT_APPLICATION, application_resource,
};
use tendril::cloud::Provider;
use tendril::facts::{InfraFacts, OutputMapping};
use tendril::teardown::{
    Outcome, Scope, Stage, TeardownEvent, TeardownOptions, TeardownReport, teardown,
};
use tendril_testkit::e2e::{self, TestCluster, WAIT};

const MANAGER: &str = "tendril-test";
/// The finalizer the tests' "cloud controller" holds a Service with.
const LB_FINALIZER: &str = "tendril.dev/test-load-balancer";

// ---- the Application CRD, shared by the tests of this binary ----

/// Users of the Application CRD in this test binary, and whether this
/// binary installed it (then the last user removes it). A test that needs
/// Argo CD absent holds the lock for its whole run.
static CRD: tokio::sync::Mutex<(usize, bool)> = tokio::sync::Mutex::const_new((0, false));

fn crds(cluster: &TestCluster) -> Api<CustomResourceDefinition> {
    Api::all(cluster.client())
}

async fn serves_applications(cluster: &TestCluster) -> bool {
    crds(cluster)
        .get_opt("applications.argoproj.io")
        .await
        .unwrap()
        .is_some()
}

/// Makes sure the cluster serves Argo CD's Application (as an Argo CD
/// install would have left it): the chart's own CRD, applied when missing.
async fn use_application_crd(cluster: &TestCluster) {
    let install = || async {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/argocd/crds/application.yaml");
        let body: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        crds(cluster)
            .patch(
                "applications.argoproj.io",
                &PatchParams::apply(MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
    };
    if cluster.is_real() {
        // one cluster for every test of this binary
        let mut crd = CRD.lock().await;
        if crd.0 == 0 && !serves_applications(cluster).await {
            install().await;
            crd.1 = true;
        }
        crd.0 += 1;
    } else {
        // a fresh test server per test
        install().await;
    }
    let established = await_condition(
        crds(cluster),
        "applications.argoproj.io",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .expect("CRD established")
        .unwrap();
    // served once discovery lists it
    let apps: Api<DynamicObject> = Api::all_with(cluster.client(), &application_resource());
    let deadline = tokio::time::Instant::now() + WAIT;
    while apps.list(&ListParams::default().limit(1)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Applications never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn release_application_crd(cluster: &TestCluster) {
    if !cluster.is_real() {
        return;
    }
    let mut crd = CRD.lock().await;
    crd.0 -= 1;
    if crd.0 == 0 && crd.1 {
        let _ = crds(cluster)
            .delete("applications.argoproj.io", &DeleteParams::default())
            .await;
        crd.1 = false;
    }
}

// ---- objects ----

fn apps_api(cluster: &TestCluster, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(cluster.client(), ns, &application_resource())
}

async fn apply<K>(api: &Api<K>, body: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

fn load_balancer(name: &str, finalizers: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

fn cluster_ip(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
    })
}

fn ingress(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"defaultBackend": {"service": {"name": name, "port": {"number": 80}}}}
    })
}

fn claim(name: &str, volume: Option<&str>) -> Value {
    let mut c = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        // no class: no provisioner of a real cluster picks it up
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    });
    if let Some(v) = volume {
        c["spec"]["volumeName"] = json!(v);
    }
    c
}

/// A volume bound in advance to `ns/claim`, "provisioned" by a driver that
/// does not exist (so no real provisioner acts on it: the test does).
fn volume(name: &str, ns: &str, claim: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name,
                     "annotations": {"pv.kubernetes.io/provisioned-by": "teardown.test.tendril.dev"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": policy, "storageClassName": "",
                 "claimRef": {"namespace": ns, "name": claim},
                 "csi": {"driver": "teardown.test.tendril.dev", "volumeHandle": name}}
    })
}

fn options(argocd_ns: &str, scope: &[&str], timeout: Duration) -> TeardownOptions {
    let mut o = TeardownOptions::new(argocd_ns);
    o.scope = Scope::Namespaces(scope.iter().map(|s| s.to_string()).collect());
    o.timeout = timeout;
    o.field_manager = MANAGER.to_string();
    o
}

type Events = Arc<Mutex<Vec<TeardownEvent>>>;

async fn run(cluster: &TestCluster, opts: &TeardownOptions) -> (TeardownReport, Events) {
    let events: Events = Arc::default();
    let sink_events = events.clone();
    let sink = move |e: TeardownEvent| sink_events.lock().unwrap().push(e);
    let report = teardown(&cluster.client(), opts, &sink)
        .await
        .unwrap_or_else(|e| panic!("teardown failed: {e}"));
    (report, events)
}

fn outcome<'a>(report: &'a TeardownReport, kind: &str, name: &str) -> Option<&'a Outcome> {
    report
        .stages
        .iter()
        .flat_map(|s| &s.objects)
        .find(|o| o.object.kind == kind && o.object.name == name)
        .map(|o| &o.outcome)
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().is_none()
}

/// Removes one finalizer from an object, as its controller does.
async fn remove_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    loop {
        let Some(obj) = api.get_opt(name).await.unwrap() else {
            return;
        };
        let meta = obj.meta();
        let left: Vec<String> = meta
            .finalizers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let patch =
            json!({"metadata": {"resourceVersion": meta.resource_version, "finalizers": left}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => panic!("removing {finalizer} from {name}: {e}"),
        }
    }
}

// ---- the test's Argo CD ----

/// The test acting as Argo CD's application controller (see the module
/// documentation). It records which Applications it cascaded and every
/// order violation it saw.
struct ArgoCd {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    cascaded: Arc<Mutex<Vec<String>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

/// What must stay untouched while an Application is still there.
#[derive(Clone)]
struct Watched {
    client: kube::Client,
    namespace: String,
    services: Vec<String>,
    ingresses: Vec<String>,
    claims: Vec<String>,
}

impl Watched {
    /// Objects of the workload namespace that are missing or being deleted.
    async fn touched(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ns = &self.namespace;
        let svc: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let ing: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        let pvc: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for n in &self.services {
            if svc
                .get_opt(n)
                .await
                .unwrap()
                .is_none_or(|o| o.metadata.deletion_timestamp.is_some())
            {
                out.push(format!("Service/{n}"));
            }
        }
        for n in &self.ingresses {
            if ing
                .get_opt(n)
                .await
                .unwrap()
                .is_none_or(|o| o.metadata.deletion_timestamp.is_some())
            {
                out.push(format!("Ingress/{n}"));
            }
        }
        for n in &self.claims {
            if pvc
                .get_opt(n)
                .await
                .unwrap()
                .is_none_or(|o| o.metadata.deletion_timestamp.is_some())
            {
                out.push(format!("PersistentVolumeClaim/{n}"));
            }
        }
        out
    }
}

impl ArgoCd {
    fn start(cluster: &TestCluster, argocd_ns: &str, watched: Watched) -> ArgoCd {
        let stop = Arc::new(AtomicBool::new(false));
        let cascaded: Arc<Mutex<Vec<String>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let apps = apps_api(cluster, argocd_ns);
        let children: Api<ConfigMap> = Api::namespaced(cluster.client(), &watched.namespace);
        let (s, c, v) = (stop.clone(), cascaded.clone(), violations.clone());
        let task = tokio::spawn(async move {
            let mut handled = BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                let list = apps.list(&ListParams::default()).await.unwrap().items;
                for app in &list {
                    let name = app.metadata.name.clone().unwrap();
                    let uid = app.metadata.uid.clone().unwrap();
                    let cascade = app
                        .metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| f.iter().any(|f| f == RESOURCES_FINALIZER));
                    if app.metadata.deletion_timestamp.is_none()
                        || !cascade
                        || handled.contains(&uid)
                    {
                        continue;
                    }
                    handled.insert(uid);
                    // root first, and alone
                    let others: Vec<String> = list
                        .iter()
                        .filter(|a| a.metadata.name.as_deref() != Some(&name))
                        .filter(|a| a.metadata.deletion_timestamp.is_some())
                        .filter_map(|a| a.metadata.name.clone())
                        .collect();
                    if name == ROOT_APPLICATION && !others.is_empty() {
                        v.lock()
                            .unwrap()
                            .push(format!("root deleted while {others:?} were being deleted"));
                    }
                    if name != ROOT_APPLICATION
                        && list
                            .iter()
                            .any(|a| a.metadata.name.as_deref() == Some(ROOT_APPLICATION))
                    {
                        v.lock().unwrap().push(format!(
                            "{name} deleted while the root Application was still there"
                        ));
                    }
                    // cascade: the Application's resources go first
                    let selector = format!("test.tendril.dev/app={name}");
                    let mine = children
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .unwrap();
                    for cm in mine.items {
                        let _ = children
                            .delete(&cm.metadata.name.unwrap(), &DeleteParams::default())
                            .await;
                    }
                    // hold it a moment: nothing else may be deleted meanwhile
                    for _ in 0..4 {
                        let touched = watched.touched().await;
                        if !touched.is_empty() {
                            v.lock().unwrap().push(format!(
                                "{touched:?} deleted while Application {name} was still there"
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    remove_finalizer(&apps, &name, RESOURCES_FINALIZER).await;
                    c.lock().unwrap().push(name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ArgoCd {
            stop,
            task,
            cascaded,
            violations,
        }
    }

    async fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let c = self.cascaded.lock().unwrap().clone();
        let v = self.violations.lock().unwrap().clone();
        (c, v)
    }
}

/// The App of Apps' Applications as a DEPLOY renders them (AWS facts), in
/// `argocd_ns`; each with one resource (a ConfigMap in `workload_ns`).
async fn deploy_applications(
    cluster: &TestCluster,
    argocd_ns: &str,
    workload_ns: &str,
) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/outputs/aws.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let facts =
        InfraFacts::from_outputs(Provider::Aws, &doc, &OutputMapping::defaults(Provider::Aws))
            .unwrap();
    let spec = AppOfApps::new(
        argocd_ns,
        AppsSource::new("https://example.invalid/shop-apps.git"),
    );
    let rendered = appofapps::render(&facts, &spec).unwrap();
    let apps = apps_api(cluster, argocd_ns);
    let children: Api<ConfigMap> = Api::namespaced(cluster.client(), workload_ns);
    let mut names = Vec::new();
    for m in rendered
        .into_iter()
        .filter(|m| m.object["kind"] == "Application")
    {
        let name = m.object["metadata"]["name"].as_str().unwrap().to_string();
        apply(&apps, std::sync::Arc::unwrap_or_clone(m.object)).await;
        apply(
            &children,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("{name}-resource"),
                                "labels": {"test.tendril.dev/app": name}}}),
        )
        .await;
        names.push(name);
    }
    assert!(
        names.iter().any(|n| n == ROOT_APPLICATION),
        "the App of Apps renders {ROOT_APPLICATION}: {names:?}"
    );
    names
}

// ---- the tests ----

#[tokio::test]
async fn applications_go_first_root_first_then_what_is_left() {
    let cluster = e2e::cluster().await;
    use_application_crd(&cluster).await;
    let argocd = cluster.namespace("td-argocd").await;
    let work = cluster.namespace("td-work").await;
    let (a, w) = (argocd.name().to_string(), work.name().to_string());

    let mut apps = deploy_applications(&cluster, &a, &w).await;
    // one Application without Argo CD's finalizer: the teardown adds it
    let extra = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "extra"},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://example.invalid/extra.git", "path": "."},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": w}}
    });
    apply(&apps_api(&cluster, &a), extra).await;
    apps.push("extra".into());

    let svc: Api<Service> = Api::namespaced(cluster.client(), &w);
    let ing: Api<Ingress> = Api::namespaced(cluster.client(), &w);
    let pvc: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), &w);
    apply(&svc, load_balancer("web", &[])).await;
    apply(&svc, cluster_ip("internal")).await;
    apply(&ing, ingress("web")).await;
    apply(&pvc, claim("data", None)).await;

    let argo = ArgoCd::start(
        &cluster,
        &a,
        Watched {
            client: cluster.client(),
            namespace: w.clone(),
            services: vec!["web".into()],
            ingresses: vec!["web".into()],
            claims: vec!["data".into()],
        },
    );
    let (report, events) = run(&cluster, &options(&a, &[&w], WAIT)).await;
    let (cascaded, violations) = argo.stop().await;

    assert!(violations.is_empty(), "order violations: {violations:?}");
    let cascaded: BTreeSet<_> = cascaded.into_iter().collect();
    let expected: BTreeSet<_> = apps.iter().cloned().collect();
    assert_eq!(
        cascaded, expected,
        "every Application went through Argo CD's finalizer"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, TeardownEvent::FinalizerAdded(o) if o.name == "extra")),
        "the finalizer was added to the Application that lacked it"
    );
    // the root is the first Application the report lists
    let app_stage = report.stage(Stage::Applications).unwrap();
    assert_eq!(app_stage.objects[0].object.name, ROOT_APPLICATION);
    for name in &apps {
        assert_eq!(
            outcome(&report, "Application", name),
            Some(&Outcome::Deleted),
            "{name}"
        );
    }
    assert_eq!(outcome(&report, "Service", "web"), Some(&Outcome::Deleted));
    assert_eq!(
        outcome(&report, "Service", "internal"),
        None,
        "a ClusterIP Service stays"
    );
    assert_eq!(outcome(&report, "Ingress", "web"), Some(&Outcome::Deleted));
    assert_eq!(
        outcome(&report, "PersistentVolumeClaim", "data"),
        Some(&Outcome::Deleted)
    );
    assert!(report.is_clean(), "{}", report.summary());
    assert!(!report.timed_out);

    // what the Applications and the teardown deleted is gone; the rest stays
    let children: Api<ConfigMap> = Api::namespaced(cluster.client(), &w);
    let left = children
        .list(&ListParams::default().labels("test.tendril.dev/app"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "Argo CD's resources are gone");
    assert!(gone(&svc, "web").await && gone(&ing, "web").await && gone(&pvc, "data").await);
    assert!(!gone(&svc, "internal").await);

    argocd.delete().await;
    work.delete().await;
    release_application_crd(&cluster).await;
}

#[tokio::test]
async fn a_load_balancer_nobody_releases_is_reported_within_the_timeout() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("td-stuck").await;
    let n = ns.name().to_string();
    let svc: Api<Service> = Api::namespaced(cluster.client(), &n);
    apply(&svc, load_balancer("stuck", &[LB_FINALIZER])).await;
    apply(&svc, load_balancer("free", &[])).await;

    let timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let (report, events) = run(&cluster, &options(&n, &[&n], timeout)).await;
    let took = started.elapsed();

    // bounded: the timeout, plus the requests that read what remains
    assert!(took < timeout + Duration::from_secs(15), "took {took:?}");
    assert!(took >= timeout, "waited the whole timeout: {took:?}");
    assert!(report.timed_out);
    assert!(!report.is_clean());
    let remaining: Vec<(&ObjectRef, _)> = report.remaining().collect();
    assert_eq!(remaining.len(), 1, "{}", report.summary());
    let (object, why) = remaining[0];
    assert_eq!(
        (object.kind.as_str(), object.name.as_str()),
        ("Service", "stuck")
    );
    assert_eq!(object.namespace.as_deref(), Some(n.as_str()));
    assert!(why.deletion_requested);
    assert!(why.finalizers.iter().any(|f| f == LB_FINALIZER), "{why:?}");
    let summary = report.summary();
    assert!(
        summary.contains(&format!("Service/{n}/stuck")) && summary.contains(LB_FINALIZER),
        "{summary}"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, TeardownEvent::Remains { object, .. } if object.name == "stuck"))
    );
    assert_eq!(outcome(&report, "Service", "free"), Some(&Outcome::Deleted));
    // the report is JSON for the job's report
    let json = serde_json::to_value(&report).unwrap();
    let stuck = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["objects"].as_array().unwrap())
        .find(|o| o["object"]["name"] == "stuck")
        .unwrap();
    assert_eq!(stuck["outcome"], "remaining");
    assert_eq!(stuck["finalizers"][0], LB_FINALIZER);

    remove_finalizer(&svc, "stuck", LB_FINALIZER).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_second_run_continues_from_what_the_first_left() {
    let cluster = e2e::cluster().await;
    use_application_crd(&cluster).await;
    let argocd = cluster.namespace("td-rerun-argocd").await;
    let work = cluster.namespace("td-rerun").await;
    let (a, w) = (argocd.name().to_string(), work.name().to_string());
    let apps = deploy_applications(&cluster, &a, &w).await;
    let svc: Api<Service> = Api::namespaced(cluster.client(), &w);
    let ing: Api<Ingress> = Api::namespaced(cluster.client(), &w);
    apply(&svc, load_balancer("web", &[LB_FINALIZER])).await;
    apply(&ing, ingress("web")).await;

    // first run: Argo CD is down, the cloud controller too
    let (first, _) = run(&cluster, &options(&a, &[&w], Duration::from_secs(2))).await;
    assert!(!first.is_clean());
    let root = outcome(&first, "Application", ROOT_APPLICATION).unwrap();
    let Outcome::Remaining(why) = root else {
        panic!("root should remain: {root:?}");
    };
    assert!(
        why.deletion_requested && why.finalizers.iter().any(|f| f == RESOURCES_FINALIZER),
        "{why:?}"
    );
    // while the root is there, the platform Applications are not deleted
    for name in apps.iter().filter(|n| *n != ROOT_APPLICATION) {
        let Some(Outcome::Remaining(r)) = outcome(&first, "Application", name) else {
            panic!("{name} should remain: {}", first.summary());
        };
        assert!(!r.deletion_requested, "{name} was not deleted");
    }
    assert!(
        first
            .summary()
            .contains("root Application root is still there"),
        "{}",
        first.summary()
    );
    assert!(matches!(
        outcome(&first, "Service", "web"),
        Some(Outcome::Remaining(_))
    ));
    assert_eq!(outcome(&first, "Ingress", "web"), Some(&Outcome::Deleted));

    // second run: both are back
    let argo = ArgoCd::start(
        &cluster,
        &a,
        Watched {
            client: cluster.client(),
            namespace: w.clone(),
            services: vec![],
            ingresses: vec![],
            claims: vec![],
        },
    );
    let released = {
        let (svc, apps_api) = (svc.clone(), apps_api(&cluster, &a));
        tokio::spawn(async move {
            // the cloud controller deletes the load balancer, then its
            // finalizer; slower than the teardown, which sees the Service
            // still there after the Applications went
            let deadline = tokio::time::Instant::now() + WAIT;
            while !apps_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Applications never gone"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            remove_finalizer(&svc, "web", LB_FINALIZER).await;
        })
    };
    let (second, _) = run(&cluster, &options(&a, &[&w], WAIT)).await;
    released.await.unwrap();
    let (cascaded, violations) = argo.stop().await;
    assert!(violations.is_empty(), "{violations:?}");
    assert!(second.is_clean(), "{}", second.summary());
    let root_again = second
        .stages
        .iter()
        .flat_map(|s| &s.objects)
        .find(|o| o.object.name == ROOT_APPLICATION)
        .unwrap();
    assert_eq!(root_again.outcome, Outcome::Deleted);
    assert!(
        root_again
            .note
            .as_deref()
            .is_some_and(|n| n.contains("begun before")),
        "{root_again:?}"
    );
    assert_eq!(
        outcome(&second, "Service", "web"),
        Some(&Outcome::Deleted),
        "{}",
        second.summary()
    );
    // what the first run finished is not there any more
    assert_eq!(outcome(&second, "Ingress", "web"), None);
    let cascaded: BTreeSet<_> = cascaded.into_iter().collect();
    assert_eq!(cascaded, apps.into_iter().collect::<BTreeSet<_>>());
    assert!(gone(&svc, "web").await);

    argocd.delete().await;
    work.delete().await;
    release_application_crd(&cluster).await;
}

#[tokio::test]
async fn without_argo_cd_the_applications_stage_is_skipped() {
    let cluster = e2e::cluster().await;
    let crd = CRD.lock().await;
    if (cluster.is_real() && crd.0 > 0) || serves_applications(&cluster).await {
        // only on a real cluster that has Argo CD: it cannot be made absent here
        eprintln!("the cluster serves Argo CD's Application: nothing to check without Argo CD");
        return;
    }
    let ns = cluster.namespace("td-noargo").await;
    let n = ns.name().to_string();
    let svc: Api<Service> = Api::namespaced(cluster.client(), &n);
    apply(&svc, load_balancer("web", &[])).await;
    let (report, events) = run(&cluster, &options(&n, &[&n], WAIT)).await;
    drop(crd);
    let apps = report.stage(Stage::Applications).unwrap();
    let why = apps.skipped.as_deref().expect("skipped");
    assert!(why.contains("Argo CD is not installed"), "{why}");
    assert!(apps.objects.is_empty());
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        TeardownEvent::Skipped {
            stage: Stage::Applications,
            ..
        }
    )));
    assert_eq!(outcome(&report, "Service", "web"), Some(&Outcome::Deleted));
    assert!(report.is_clean());
    assert!(report.summary().contains("applications: skipped"));
    ns.delete().await;
}

#[tokio::test]
async fn claims_and_their_delete_volumes_are_waited_for_retained_ones_reported() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("td-volumes").await;
    let n = ns.name().to_string();
    let pvc: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), &n);
    let pvs: Api<PersistentVolume> = Api::all(cluster.client());
    let (doomed, kept) = (format!("{n}-doomed"), format!("{n}-kept"));
    apply(&pvs, volume(&doomed, &n, "doomed", "Delete")).await;
    apply(&pvs, volume(&kept, &n, "kept", "Retain")).await;
    apply(&pvc, claim("doomed", Some(&doomed))).await;
    apply(&pvc, claim("kept", Some(&kept))).await;

    // the provisioner: once the claim is gone, it deletes the Delete volume
    // (a moment later, so that the teardown must wait for it)
    let provisioner = {
        let (pvc, pvs, doomed) = (pvc.clone(), pvs.clone(), doomed.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while pvc.get_opt("doomed").await.unwrap().is_some() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "claim never deleted"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            pvs.delete(&doomed, &DeleteParams::default()).await.unwrap();
        })
    };
    let (report, events) = run(&cluster, &options(&n, &[&n], WAIT)).await;
    provisioner.await.unwrap();

    assert_eq!(
        outcome(&report, "PersistentVolumeClaim", "doomed"),
        Some(&Outcome::Deleted)
    );
    assert_eq!(
        outcome(&report, "PersistentVolumeClaim", "kept"),
        Some(&Outcome::Deleted)
    );
    assert_eq!(
        outcome(&report, "PersistentVolume", &doomed),
        Some(&Outcome::Gone),
        "{}",
        report.summary()
    );
    let Some(Outcome::Retained { reclaim_policy, .. }) =
        outcome(&report, "PersistentVolume", &kept)
    else {
        panic!(
            "the Retain volume is reported as retained: {}",
            report.summary()
        );
    };
    assert_eq!(reclaim_policy, "Retain");
    assert!(report.is_clean(), "a retained volume is not a leftover");
    assert_eq!(report.retained().count(), 1);
    assert!(
        gone(&pvs, &doomed).await,
        "the teardown returned only after the volume went"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, TeardownEvent::Gone(o) if o.name == doomed))
    );
    assert!(!gone(&pvs, &kept).await);

    // the retained volume is cluster-scoped: this test removes it
    let _ = pvs.delete(&kept, &DeleteParams::default()).await;
    remove_finalizer(&pvs, &kept, "kubernetes.io/pv-protection").await;
    ns.delete().await;
}
