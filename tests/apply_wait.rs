//! Readiness rules and waiting (`--wait`): every rule, failures, timeouts and
//! their diagnostics. Status is written through the status subresource as the
//! object's controller (or kubelet) would; on a real cluster the real
//! controllers write it (see `simulate_status`), except for objects no
//! controller owns (a LoadBalancer without a cloud, a test CRD), which the
//! test drives on both.

mod apply_common;

use apply_common::*;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tendril::apply::{ApplyError, ApplyOptions, ReadinessOptions, Status};
use tendril_testkit::e2e;

fn waiting() -> ApplyOptions {
    let mut o = opts();
    o.wait = true;
    o
}

fn generation(v: &Value) -> i64 {
    v["metadata"]["generation"].as_i64().unwrap_or(1)
}

const PAUSE: &str = "registry.k8s.io/pause:3.10";
const UNPULLABLE: &str = "registry.invalid/tendril/does-not-exist:1";

fn deployment(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  {extra_spec}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: main, image: "{image}"}}]}}
"#
    )
}

fn ready_deployment_status(generation: i64) -> Value {
    json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
           "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})
}

/// On the in-repo server: a pod stuck pulling its image, and the kubelet's warning event.
async fn simulate_unpullable_pod(cluster: &tendril_testkit::e2e::TestCluster, ns: &str, app: &str) {
    if cluster.is_real() {
        return;
    }
    let pods = api(cluster, "v1", "Pod", "pods", Some(ns));
    let name = format!("{app}-7d4b9c-x2x9q");
    pods.create(
        &Default::default(),
        &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": UNPULLABLE}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    set_status(&pods, &name, json!({"phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [main]"}],
        "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": UNPULLABLE, "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{UNPULLABLE}\"")}}}]})).await;
    let events = api(cluster, "v1", "Event", "events", Some(ns));
    events
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.17f1"), "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": ns, "apiVersion": "v1"},
                "type": "Warning", "reason": "Failed",
                "message": format!("Failed to pull image \"{UNPULLABLE}\": not found"),
                "lastTimestamp": "2026-01-01T00:00:00Z", "count": 3, "source": {"component": "kubelet"}}))
            .unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn deployment_is_ready_only_after_the_controller_observed_our_generation() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-deploy").await;
    let n = ns.name().to_string();
    let deployments = api(&cluster, "apps/v1", "Deployment", "deployments", Some(&n));

    // Generation 1, ready.
    let o = waiting();
    let first = async {
        let d = wait_exists(&deployments, "web").await;
        simulate_status(
            &cluster,
            &deployments,
            "web",
            ready_deployment_status(generation(&d)),
        )
        .await;
    };
    let (report, ()) = tokio::join!(apply(&cluster, &n, deployment("web", PAUSE, ""), &o), first);
    let report = report.expect("ready");
    assert_eq!(result(&report, "Deployment", "web").status, Status::Ready);

    // Generation 2: the status still describes generation 1 and must not count.
    let changed = deployment("web", PAUSE, "minReadySeconds: 1");
    let observed = AtomicBool::new(false);
    let controller = async {
        if cluster.is_real() {
            return;
        }
        let deadline = tokio::time::Instant::now() + e2e::WAIT;
        loop {
            let d = get(&deployments, "web").await.unwrap();
            if generation(&d) >= 2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                observed.store(true, Ordering::SeqCst);
                set_status(&deployments, "web", ready_deployment_status(generation(&d))).await;
                return;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let run = async {
        let r = apply(&cluster, &n, &changed, &o).await;
        (r, observed.load(Ordering::SeqCst))
    };
    let ((report, seen), ()) = tokio::join!(run, controller);
    let report = report.expect("ready at generation 2");
    assert_eq!(result(&report, "Deployment", "web").status, Status::Ready);
    if !cluster.is_real() {
        assert!(
            seen,
            "apply returned before the controller observed generation 2"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn deployment_progress_deadline_is_a_failure_with_pod_diagnostics() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-deadline").await;
    let n = ns.name().to_string();
    let deployments = api(&cluster, "apps/v1", "Deployment", "deployments", Some(&n));
    let controller = async {
        let d = wait_exists(&deployments, "stuck").await;
        simulate_unpullable_pod(&cluster, &n, "stuck").await;
        simulate_status(&cluster, &deployments, "stuck", json!({"observedGeneration": generation(&d), "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"stuck-7d4b9c\" has timed out progressing."}]})).await;
    };
    let o = waiting();
    let (res, ()) = tokio::join!(
        apply(
            &cluster,
            &n,
            deployment("stuck", UNPULLABLE, "progressDeadlineSeconds: 2"),
            &o
        ),
        controller
    );
    let err = res.unwrap_err();
    assert!(matches!(err, ApplyError::Failed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("ProgressDeadlineExceeded"), "{text}");
    let r = result(err.report().unwrap(), "Deployment", "stuck");
    assert!(matches!(r.status, Status::Failed(_)), "{r:?}");
    let diag = r.diagnostics.join("\n");
    assert!(diag.contains("pod stuck-"), "names the pod: {diag}");
    assert!(
        diag.contains("ErrImagePull") || diag.contains("ImagePullBackOff"),
        "{diag}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn timeout_lists_every_object_not_ready_and_why() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-timeout").await;
    let n = ns.name().to_string();
    let yaml = format!(
        "{}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fine}}\n",
        deployment("alpha", UNPULLABLE, ""),
        deployment("beta", UNPULLABLE, "")
    );
    let mut o = waiting();
    o.timeout = Duration::from_secs(4);
    let setup = async {
        let deployments = api(&cluster, "apps/v1", "Deployment", "deployments", Some(&n));
        let d = wait_exists(&deployments, "alpha").await;
        simulate_unpullable_pod(&cluster, &n, "alpha").await;
        simulate_status(&cluster, &deployments, "alpha", json!({"observedGeneration": generation(&d), "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1})).await;
    };
    let (res, ()) = tokio::join!(apply(&cluster, &n, &yaml, &o), setup);
    let err = res.unwrap_err();
    assert!(matches!(err, ApplyError::Timeout { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out after 4s"), "{text}");
    assert!(
        text.contains(&format!("Deployment/{n}/alpha"))
            && text.contains(&format!("Deployment/{n}/beta")),
        "{text}"
    );
    assert!(
        text.contains("0 of 1 replicas ready") || text.contains("not observed"),
        "{text}"
    );
    let report = err.report().unwrap();
    assert_eq!(result(report, "ConfigMap", "fine").status, Status::Ready);
    let alpha = result(report, "Deployment", "alpha");
    assert!(matches!(alpha.status, Status::NotReady(_)), "{alpha:?}");
    let diag = alpha.diagnostics.join("\n");
    assert!(
        diag.contains("pod alpha-")
            && (diag.contains("ImagePullBackOff") || diag.contains("ErrImagePull")),
        "{diag}"
    );
    assert!(
        text.contains("pod alpha-"),
        "the error text goes down to the pod: {text}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn workloads_statefulset_daemonset_replicaset() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-workloads").await;
    let n = ns.name().to_string();
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  replicas: 1
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: main, image: "{PAUSE}"}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      nodeSelector: {{tendril.dev/no-such-node: "true"}}
      containers: [{{name: main, image: "{PAUSE}"}}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: rs}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: rs}}}}
  template:
    metadata: {{labels: {{app: rs}}}}
    spec: {{containers: [{{name: main, image: "{PAUSE}"}}]}}
"#
    );
    let controllers = async {
        let sts = api(&cluster, "apps/v1", "StatefulSet", "statefulsets", Some(&n));
        let ds = api(&cluster, "apps/v1", "DaemonSet", "daemonsets", Some(&n));
        let rs = api(&cluster, "apps/v1", "ReplicaSet", "replicasets", Some(&n));
        let s = wait_exists(&sts, "db").await;
        // Rolling out first: revisions differ.
        simulate_status(&cluster, &sts, "db", json!({"observedGeneration": generation(&s), "replicas": 1, "readyReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2", "updatedReplicas": 0})).await;
        let d = wait_exists(&ds, "agent").await;
        simulate_status(&cluster, &ds, "agent", json!({"observedGeneration": generation(&d), "desiredNumberScheduled": 0, "currentNumberScheduled": 0, "updatedNumberScheduled": 0, "numberReady": 0, "numberAvailable": 0, "numberMisscheduled": 0})).await;
        let r = wait_exists(&rs, "rs").await;
        simulate_status(&cluster, &rs, "rs", json!({"observedGeneration": generation(&r), "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "fullyLabeledReplicas": 1})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        simulate_status(&cluster, &sts, "db", json!({"observedGeneration": generation(&s), "replicas": 1, "readyReplicas": 1, "currentRevision": "db-2", "updateRevision": "db-2", "updatedReplicas": 1, "currentReplicas": 1, "availableReplicas": 1})).await;
    };
    let o = waiting();
    let (report, ()) = tokio::join!(apply(&cluster, &n, &yaml, &o), controllers);
    let report = report.expect("all ready");
    for (kind, name) in [
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
        ("ReplicaSet", "rs"),
    ] {
        assert_eq!(result(&report, kind, name).status, Status::Ready, "{kind}");
    }
    ns.delete().await;
}

#[tokio::test]
async fn pods_ready_and_failed() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-pods").await;
    let n = ns.name().to_string();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: runner}}
spec: {{containers: [{{name: main, image: "{PAUSE}"}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crasher}}
spec:
  restartPolicy: Never
  containers: [{{name: main, image: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", command: ["sh", "-c", "exit 3"]}}]
"#
    );
    let kubelet = async {
        let pods = api(&cluster, "v1", "Pod", "pods", Some(&n));
        wait_exists(&pods, "runner").await;
        simulate_status(&cluster, &pods, "runner", json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": PAUSE, "imageID": "", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})).await;
        wait_exists(&pods, "crasher").await;
        simulate_status(&cluster, &pods, "crasher", json!({"phase": "Failed",
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]})).await;
    };
    let o = waiting();
    let (res, ()) = tokio::join!(apply(&cluster, &n, &yaml, &o), kubelet);
    let err = res.unwrap_err();
    let report = err.report().expect("report");
    assert_eq!(result(report, "Pod", "runner").status, Status::Ready);
    let crasher = result(report, "Pod", "crasher");
    assert!(
        matches!(&crasher.status, Status::Failed(r) if r.contains("exit code 3")),
        "{crasher:?}"
    );
    assert!(err.to_string().contains("crasher"), "{err}");
    ns.delete().await;
}

#[tokio::test]
async fn jobs_complete_and_failed() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-jobs").await;
    let n = ns.name().to_string();
    let job = |name: &str, extra: &str, cmd: &str| {
        format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  {extra}
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", command: ["sh", "-c", "{cmd}"]}}]
"#
        )
    };
    let jobs = api(&cluster, "batch/v1", "Job", "jobs", Some(&n));
    // Completes.
    let o = waiting();
    let controller = async {
        wait_exists(&jobs, "ok").await;
        simulate_status(
            &cluster,
            &jobs,
            "ok",
            json!({"active": 1, "startTime": "2026-01-01T00:00:00Z"}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        simulate_status(&cluster, &jobs, "ok", json!({"active": 0, "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:05Z",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]})).await;
    };
    let (report, ()) = tokio::join!(apply(&cluster, &n, job("ok", "", "exit 0"), &o), controller);
    assert_eq!(
        result(&report.expect("complete"), "Job", "ok").status,
        Status::Ready
    );

    // Fails.
    let controller = async {
        wait_exists(&jobs, "bad").await;
        simulate_status(&cluster, &jobs, "bad", json!({"failed": 1, "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
                           {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})).await;
    };
    let (res, ()) = tokio::join!(
        apply(&cluster, &n, job("bad", "", "exit 1"), &o),
        controller
    );
    let err = res.unwrap_err();
    assert!(matches!(err, ApplyError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("BackoffLimitExceeded"), "{err}");
    ns.delete().await;
}

#[tokio::test]
async fn persistent_volume_claim_bound() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-pvc").await;
    let n = ns.name().to_string();
    let pv = unique("tendril-pv");
    // A pre-bound pair: the PV controller binds them without any provisioner.
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  capacity: {{storage: 1Mi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: /tmp/{pv}}}
  claimRef: {{namespace: {n}, name: data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: {pv}
  resources: {{requests: {{storage: 1Mi}}}}
"#
    );
    let controller = async {
        let pvcs = api(
            &cluster,
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Some(&n),
        );
        wait_exists(&pvcs, "data").await;
        simulate_status(&cluster, &pvcs, "data", json!({"phase": "Pending"})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        simulate_status(&cluster, &pvcs, "data", json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Mi"}})).await;
    };
    let o = waiting();
    let (report, ()) = tokio::join!(apply(&cluster, &n, &yaml, &o), controller);
    let report = report.expect("bound");
    assert_eq!(
        result(&report, "PersistentVolumeClaim", "data").status,
        Status::Ready
    );
    ns.delete().await;
    delete_cluster_object(&cluster, "v1", "PersistentVolume", "persistentvolumes", &pv).await;
}

#[tokio::test]
async fn load_balancer_needs_an_ingress_address_when_asked() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-lb").await;
    let n = ns.name().to_string();
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: edge}\nspec:\n  type: LoadBalancer\n  selector: {app: edge}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let mut o = waiting();
    o.readiness = ReadinessOptions {
        load_balancers: true,
        ..ReadinessOptions::default()
    };
    let assigned = AtomicBool::new(false);
    let lb_controller = async {
        let services = api(&cluster, "v1", "Service", "services", Some(&n));
        wait_exists(&services, "edge").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assigned.store(true, Ordering::SeqCst);
        // A cloud controller would write this; a test cluster has none, so the test does (on both).
        set_status(
            &services,
            "edge",
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}),
        )
        .await;
    };
    let run = async {
        let r = apply(&cluster, &n, yaml, &o).await;
        (r, assigned.load(Ordering::SeqCst))
    };
    let ((report, was_assigned), ()) = tokio::join!(run, lb_controller);
    assert_eq!(
        result(&report.expect("ready"), "Service", "edge").status,
        Status::Ready
    );
    assert!(
        was_assigned,
        "ready only after the ingress address was assigned"
    );

    // Without the option, a LoadBalancer without address is ready once it exists.
    let plain = yaml.replace("name: edge", "name: edge2");
    let report = apply(&cluster, &n, &plain, &waiting())
        .await
        .expect("ready");
    assert_eq!(result(&report, "Service", "edge2").status, Status::Ready);
    ns.delete().await;
}

#[tokio::test]
async fn custom_resource_with_ready_condition() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-cr").await;
    let n = ns.name().to_string();
    let group = format!("{}.tendril.test", unique("w"));
    let crd = crd_yaml(&group, "Widget", "widgets", "Namespaced");
    let yaml = format!(
        "{crd}---\napiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 1}}\n"
    );
    let widgets = api(
        &cluster,
        &format!("{group}/v1"),
        "Widget",
        "widgets",
        Some(&n),
    );
    let ready = |g: i64, status: &str| json!({"observedGeneration": g, "conditions": [{"type": "Ready", "status": status, "reason": "Reconciled", "message": "", "observedGeneration": g, "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    // Generation 1 exists and its controller (the test, on both kinds of cluster) reported it Ready.
    apply(&cluster, &n, &yaml, &opts()).await.expect("created");
    let w = wait_exists(&widgets, "w1").await;
    set_status(&widgets, "w1", ready(generation(&w), "True")).await;

    // Generation 2: the Ready=True of generation 1 must not count.
    let yaml = yaml.replace("size: 1", "size: 2");
    let flipped = AtomicBool::new(false);
    let controller = async {
        let deadline = tokio::time::Instant::now() + e2e::WAIT;
        let g = loop {
            let w = get(&widgets, "w1").await.unwrap();
            if generation(&w) >= 2 {
                break generation(&w);
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        set_status(&widgets, "w1", ready(g, "False")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        flipped.store(true, Ordering::SeqCst);
        set_status(&widgets, "w1", ready(g, "True")).await;
    };
    let o = waiting();
    let run = async {
        let r = apply(&cluster, &n, &yaml, &o).await;
        (r, flipped.load(Ordering::SeqCst))
    };
    let ((report, was_flipped), ()) = tokio::join!(run, controller);
    assert_eq!(
        result(&report.expect("ready"), "Widget", "w1").status,
        Status::Ready
    );
    assert!(was_flipped, "ready only after Ready=True");
    ns.delete().await;
    delete_cluster_object(
        &cluster,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &format!("widgets.{group}"),
    )
    .await;
}

#[tokio::test]
async fn argo_cd_application_synced_and_healthy_when_asked() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-app").await;
    let n = ns.name().to_string();
    let crds = api(
        &cluster,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    let preexisting = get(&crds, "applications.argoproj.io").await.is_some();
    let mut yaml = String::new();
    if !preexisting {
        yaml.push_str(
            &crd_yaml("argoproj.io", "Application", "applications", "Namespaced")
                .replace("  - name: v1\n", "  - name: v1alpha1\n"),
        );
        yaml.push_str("---\n");
    }
    yaml.push_str("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: guestbook}\nspec:\n  project: default\n  source: {repoURL: 'https://example.invalid/repo.git', path: guestbook}\n  destination: {server: 'https://kubernetes.default.svc', namespace: guestbook}\n");
    let mut o = waiting();
    o.readiness = ReadinessOptions::default().with_rule(tendril::appofapps::ApplicationReadiness);
    let healthy = AtomicBool::new(false);
    let argo = async {
        let apps = api(
            &cluster,
            "argoproj.io/v1alpha1",
            "Application",
            "applications",
            Some(&n),
        );
        wait_exists(&apps, "guestbook").await;
        set_status(
            &apps,
            "guestbook",
            json!({"sync": {"status": "Synced"}, "health": {"status": "Progressing"}}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        healthy.store(true, Ordering::SeqCst);
        set_status(
            &apps,
            "guestbook",
            json!({"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}),
        )
        .await;
    };
    let run = async {
        let r = apply(&cluster, &n, &yaml, &o).await;
        (r, healthy.load(Ordering::SeqCst))
    };
    let ((report, was_healthy), ()) = tokio::join!(run, argo);
    assert_eq!(
        result(&report.expect("ready"), "Application", "guestbook").status,
        Status::Ready
    );
    assert!(was_healthy, "ready only once Synced and Healthy");
    ns.delete().await;
    if !preexisting {
        delete_cluster_object(
            &cluster,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "applications.argoproj.io",
        )
        .await;
    }
}

#[tokio::test]
async fn unchanged_ready_objects_need_no_wait() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("wait-unchanged").await;
    let n = ns.name().to_string();
    let deployments = api(&cluster, "apps/v1", "Deployment", "deployments", Some(&n));
    let yaml = deployment("steady", PAUSE, "");
    let o = in_applyset(waiting(), "steady-set", &n);
    let first = async {
        let d = wait_exists(&deployments, "steady").await;
        simulate_status(
            &cluster,
            &deployments,
            "steady",
            ready_deployment_status(generation(&d)),
        )
        .await;
    };
    let (r, ()) = tokio::join!(apply(&cluster, &n, &yaml, &o), first);
    r.expect("ready");
    let again = apply(&cluster, &n, &yaml, &o).await.expect("ready again");
    let r = result(&again, "Deployment", "steady");
    assert_eq!(r.action, tendril::apply::Action::Unchanged);
    assert_eq!(r.status, Status::Ready);
    ns.delete().await;
}
