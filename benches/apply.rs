//! Apply benchmark: what the Argo CD install of a DEPLOY job applies (the
//! embedded chart's default render plus its Namespace), as a user runs it.
//!
//! Run it with `scripts/bench-apply.sh` (which builds the release binary
//! first), or `cargo bench --bench apply`. Per run, on a fresh cluster state:
//!
//! 1. `tendril apply` first apply (apply set `tendril-argocd`, `--prune`),
//!    then the unchanged re-apply: wall time and peak RSS of the whole
//!    process (`/usr/bin/time`), and the API requests tendril counted;
//! 2. when `kubectl` is on `PATH`: `kubectl apply --server-side` the same way
//!    on a fresh state, interleaved with tendril's runs (T K T K ...), and
//!    the ratio kubectl / tendril of each pair;
//! 3. on the in-repo test API server: readiness latency. The library's
//!    `ResourceManager::apply` with `wait` runs in this process; a task here
//!    marks every workload ready through the status subresource (as their
//!    controllers would), the last Deployment after the others, and the
//!    latency is from that last status write to `apply` returning.
//!
//! A fresh state is a new test API server, or on a real cluster
//! (`TENDRIL_E2E_KUBECONFIG`) the bundle's Namespace and cluster-scoped
//! objects deleted and gone. The bench refuses to delete what it did not
//! make unless `TENDRIL_BENCH_CLEAN=1`.
//!
//! Environment:
//! - `TENDRIL_E2E_KUBECONFIG`: a real cluster instead of the in-repo server
//!   (step 3 is skipped: the real controllers decide when things are ready);
//! - `TENDRIL_BIN`: the binary (default: `$CARGO_TARGET_DIR/release/tendril`);
//! - `TENDRIL_BENCH_RUNS`: runs (default 5);
//! - `TENDRIL_BENCH_KUBECTL`: the kubectl to compare with (default: `kubectl`
//!   on `PATH`; `none` to skip it).

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tendril::apply::{ApplyEvent, ApplyOptions, ApplySet, Manifest, ResourceManager};
use tendril::argocd::{self, ArgoCdSpec};
use tendril_testkit::apiserver::ApiServer;

/// Where the deploy installs Argo CD.
const NAMESPACE: &str = "argocd";

/// Where the objects of one fresh state live.
struct Fresh {
    kubeconfig: PathBuf,
    /// The in-repo server (none on a real cluster).
    server: Option<ApiServer>,
}

impl Fresh {
    fn requests_received(&self) -> Option<u64> {
        self.server.as_ref().map(ApiServer::requests_received)
    }
}

/// The cluster the bench runs against.
enum Target {
    TestServer {
        tmp: PathBuf,
    },
    Real {
        kubeconfig: PathBuf,
        client: kube::Client,
    },
}

impl Target {
    async fn from_env(tmp: &Path) -> Target {
        let Some(kc) = std::env::var_os("TENDRIL_E2E_KUBECONFIG").filter(|v| !v.is_empty()) else {
            return Target::TestServer {
                tmp: tmp.to_path_buf(),
            };
        };
        let kubeconfig = PathBuf::from(kc);
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("read TENDRIL_E2E_KUBECONFIG"),
            &Default::default(),
        )
        .await
        .expect("usable kubeconfig");
        Target::Real {
            kubeconfig,
            client: kube::Client::try_from(config).expect("client"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::TestServer { .. } => "the in-repo test API server",
            Target::Real { .. } => "the cluster TENDRIL_E2E_KUBECONFIG names",
        }
    }

    /// A state without any object of the bundle.
    async fn fresh(&self, bundle: &[Manifest], run: &str) -> Fresh {
        match self {
            Target::TestServer { tmp } => {
                let server = ApiServer::start();
                let kubeconfig = tmp.join(format!("kubeconfig-{run}"));
                server
                    .write_kubeconfig(&kubeconfig)
                    .expect("write kubeconfig");
                Fresh {
                    kubeconfig,
                    server: Some(server),
                }
            }
            Target::Real { kubeconfig, client } => {
                remove_bundle(client, bundle).await;
                Fresh {
                    kubeconfig: kubeconfig.clone(),
                    server: None,
                }
            }
        }
    }
}

/// The endpoint of a manifest's kind, and whether it is namespaced.
async fn endpoint(client: &kube::Client, m: &Manifest) -> (ApiResource, bool) {
    let (group, version) = m
        .api_version()
        .rsplit_once('/')
        .unwrap_or(("", m.api_version()));
    let gvk = GroupVersionKind::gvk(group, version, m.kind());
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovery of {}: {e}", m.api_version()));
    (ar, caps.scope == kube::discovery::Scope::Namespaced)
}

/// The bundle's Namespace and cluster-scoped objects (its namespaced objects
/// go with the Namespace).
async fn cluster_scoped(
    client: &kube::Client,
    bundle: &[Manifest],
) -> Vec<(Api<DynamicObject>, String)> {
    let mut out = Vec::new();
    for m in bundle {
        let (ar, namespaced) = endpoint(client, m).await;
        if !namespaced {
            out.push((Api::all_with(client.clone(), &ar), m.name().to_string()));
        }
    }
    out
}

/// Checks that the real cluster holds nothing of the bundle the bench did
/// not make (it deletes those objects between runs).
async fn refuse_foreign_objects(client: &kube::Client, bundle: &[Manifest]) {
    if std::env::var("TENDRIL_BENCH_CLEAN").as_deref() == Ok("1") {
        return;
    }
    for (api, name) in cluster_scoped(client, bundle).await {
        if let Ok(Some(o)) = api.get_opt(&name).await {
            let ar = o.types.map(|t| t.kind).unwrap_or_default();
            eprintln!(
                "apply bench: the cluster already has {ar} {name}. The bench deletes and recreates every object of the Argo CD bundle between runs; use a cluster without Argo CD, or set TENDRIL_BENCH_CLEAN=1 to let it delete them."
            );
            std::process::exit(2);
        }
    }
}

/// Deletes the bundle's Namespace and cluster-scoped objects and waits until
/// they are gone.
async fn remove_bundle(client: &kube::Client, bundle: &[Manifest]) {
    let objects = cluster_scoped(client, bundle).await;
    for (api, name) in &objects {
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
    let until = Instant::now() + Duration::from_secs(180);
    for (api, name) in &objects {
        while matches!(api.get_opt(name).await, Ok(Some(_))) {
            assert!(
                Instant::now() < until,
                "{name} still exists after 3 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One finished process.
struct Measured {
    wall: Duration,
    rss_mb: f64,
    /// API requests: tendril's own count, else counted by the test server
    /// or from kubectl's `-v=6` log.
    requests: u64,
    /// What the test server counted (cross-check of tendril's own count).
    server_counted: Option<u64>,
    stdout: String,
}

async fn run_timed(
    mut cmd: tokio::process::Command,
    what: &str,
) -> (Duration, f64, String, String) {
    cmd.env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().await.expect("run under /usr/bin/time");
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    let rss_kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (wall, rss_kb / 1024.0, stdout, stderr)
}

fn timed(program: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/usr/bin/time");
    cmd.arg("-f").arg("BENCH_RSS_KB=%M").arg(program);
    cmd
}

async fn run_tendril(bin: &Path, bundle: &Path, fresh: &Fresh) -> Measured {
    let before = fresh.requests_received();
    let mut cmd = timed(bin);
    cmd.args(["apply", "-f"])
        .arg(bundle)
        .arg("--kubeconfig")
        .arg(&fresh.kubeconfig)
        .args(["-n", NAMESPACE, "--output", "json", "--timeout", "5m"])
        .args(["--applyset", argocd::APPLYSET, "--prune"]);
    let (wall, rss_mb, stdout, stderr) = run_timed(cmd, "tendril apply").await;
    // The summary line ends with "; N API requests".
    let requests = stderr
        .lines()
        .filter_map(|l| {
            l.rsplit_once("; ")?
                .1
                .strip_suffix(" API requests")?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or_else(|| panic!("no request count in tendril's summary:\n{stderr}"));
    Measured {
        wall,
        rss_mb,
        requests,
        server_counted: fresh.requests_received().zip(before).map(|(a, b)| a - b),
        stdout,
    }
}

async fn run_kubectl(kubectl: &Path, bundle: &Path, fresh: &Fresh) -> Measured {
    let before = fresh.requests_received();
    let mut cmd = timed(kubectl);
    cmd.arg("--kubeconfig")
        .arg(&fresh.kubeconfig)
        .args(["apply", "--server-side", "-n", NAMESPACE, "-f"])
        .arg(bundle);
    if before.is_none() {
        // On a real cluster only kubectl's own log can count its requests.
        cmd.arg("-v=6");
    } else {
        // The test server serves no OpenAPI document, which kubectl's
        // validation downloads first (a real server validates server-side).
        cmd.arg("--validate=false");
    }
    let (wall, rss_mb, stdout, stderr) = run_timed(cmd, "kubectl apply --server-side").await;
    let counted = fresh.requests_received().zip(before).map(|(a, b)| a - b);
    let requests = counted.unwrap_or_else(|| {
        stderr
            .lines()
            .filter(|l| l.contains("round_trippers") && l.contains(" milliseconds"))
            .count() as u64
    });
    Measured {
        wall,
        rss_mb,
        requests,
        server_counted: counted,
        stdout,
    }
}

/// The deploy's Argo CD bundle: its Namespace and the embedded chart's default render.
fn argocd_bundle() -> Vec<Manifest> {
    let spec = ArgoCdSpec::new(NAMESPACE);
    let rendered = argocd::render(&spec).expect("the embedded chart renders");
    argocd::bundle(NAMESPACE, rendered.manifests().to_vec())
}

fn write_bundle(bundle: &[Manifest], path: &Path) {
    let docs: Vec<String> = bundle.iter().map(|m| m.object.to_string()).collect();
    std::fs::write(path, docs.join("\n---\n")).expect("write the bench bundle");
}

/// The workloads of the bundle, the last Deployment last.
fn workloads(bundle: &[Manifest]) -> Vec<(ApiResource, String)> {
    let ar = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind), plural)
    };
    let mut out: Vec<(ApiResource, String)> = bundle
        .iter()
        .filter_map(|m| match m.kind() {
            "StatefulSet" => Some((ar("StatefulSet", "statefulsets"), m.name().to_string())),
            "Deployment" => Some((ar("Deployment", "deployments"), m.name().to_string())),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(ar, _)| ar.kind == "Deployment");
    out
}

/// When the last workload's ready status was written.
struct Flipped {
    sent: Instant,
    acknowledged: Instant,
}

/// Waits until every workload exists, marks all but the last ready through
/// the status subresource, then the last one.
async fn mark_ready(client: kube::Client, workloads: Vec<(ApiResource, String)>) -> Flipped {
    let mut generations = Vec::new();
    for (ar, name) in &workloads {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, ar);
        let o = loop {
            if let Ok(Some(o)) = api.get_opt(name).await {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        generations.push(o.metadata.generation.unwrap_or(1));
    }
    // tendril is waiting by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = workloads.len();
    let mut last = None;
    for (k, ((ar, name), generation)) in workloads.iter().zip(generations).enumerate() {
        if k + 1 == n {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let status = if ar.kind == "Deployment" {
            json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
        } else {
            json!({"observedGeneration": generation, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1, "currentRevision": "r1", "updateRevision": "r1"})
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, ar);
        let sent = Instant::now();
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("status write");
        last = Some(Flipped {
            sent,
            acknowledged: Instant::now(),
        });
    }
    last.expect("the bundle has workloads")
}

/// Readiness latency of one wait: from the last workload's status write
/// (sent, acknowledged) to the library noticing it (its `Ready` event) and
/// to `apply` returning, in milliseconds.
async fn readiness_latency(bundle: &[Manifest]) -> (f64, f64, f64) {
    let server = ApiServer::start();
    let client = server.client();
    let workloads = workloads(bundle);
    let last_name = workloads.last().map(|(_, n)| n.clone()).unwrap_or_default();
    let flipper = tokio::spawn(mark_ready(client.clone(), workloads));
    let manager = ResourceManager::new(client, NAMESPACE);
    let opts = ApplyOptions {
        wait: true,
        timeout: Duration::from_secs(120),
        applyset: Some(ApplySet::new(argocd::APPLYSET, NAMESPACE).expect("apply set")),
        prune: true,
        ..ApplyOptions::default()
    };
    let noticed: Arc<Mutex<Option<Instant>>> = Arc::default();
    let sink = {
        let noticed = noticed.clone();
        move |e: ApplyEvent| {
            if let ApplyEvent::Ready { object } = e
                && object.name == last_name
                && object.kind == "Deployment"
                && let Ok(mut n) = noticed.lock()
            {
                *n = Some(Instant::now());
            }
        }
    };
    manager
        .apply(bundle.to_vec(), &opts, &sink)
        .await
        .expect("apply with wait");
    let returned = Instant::now();
    let flipped = flipper.await.expect("status writer");
    let noticed = noticed.lock().ok().and_then(|n| *n).expect("Ready event");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(noticed.saturating_duration_since(flipped.acknowledged)),
        ms(returned.saturating_duration_since(flipped.acknowledged)),
        ms(flipped.acknowledged - flipped.sent),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TENDRIL_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release/tendril")
}

/// kubectl to compare with, when there is one.
fn find_kubectl() -> Option<PathBuf> {
    let wanted = std::env::var("TENDRIL_BENCH_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    if wanted == "none" {
        return None;
    }
    let found = if wanted.contains('/') {
        Some(PathBuf::from(&wanted)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(&wanted))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
    };
    found.filter(|k| {
        std::process::Command::new(k)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn count(stdout: &str, action: &str) -> usize {
    serde_json::from_str::<Value>(stdout)
        .ok()
        .and_then(|r| {
            r["objects"]
                .as_array()
                .map(|o| o.iter().filter(|x| x["action"] == action).count())
        })
        .unwrap_or(0)
}

/// Medians of one tool's runs.
#[derive(Default)]
struct Series {
    first: Vec<f64>,
    again: Vec<f64>,
    rss: Vec<f64>,
    requests: (u64, u64),
}

impl Series {
    fn push(&mut self, first: &Measured, again: &Measured) {
        self.first.push(first.wall.as_secs_f64() * 1e3);
        self.again.push(again.wall.as_secs_f64() * 1e3);
        self.rss.push(first.rss_mb.max(again.rss_mb));
        self.requests = (first.requests, again.requests);
    }

    fn summary(&self, tool: &str) -> String {
        format!(
            "{tool}: first apply {:.0} ms ({} requests), re-apply {:.0} ms ({} requests), peak RSS {:.1} MB (max {:.1})",
            median(self.first.clone()),
            self.requests.0,
            median(self.again.clone()),
            self.requests.1,
            median(self.rss.clone()),
            self.rss.iter().copied().fold(0.0, f64::max),
        )
    }
}

fn ratios(k: &[f64], t: &[f64]) -> f64 {
    median(k.iter().zip(t).map(|(k, t)| k / t).collect())
}

fn main() {
    // `cargo bench` passes --bench; a `cargo test` run of this target does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = find_binary();
    if !bin.is_file() {
        eprintln!(
            "apply bench: {} missing; run scripts/bench-apply.sh or set TENDRIL_BIN",
            bin.display()
        );
        std::process::exit(2);
    }
    let runs: usize = std::env::var("TENDRIL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let kubectl = find_kubectl();
    let tmp = std::env::temp_dir().join(format!("tendril-apply-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let bundle = argocd_bundle();
    let bundle_file = tmp.join("bundle.yaml");
    write_bundle(&bundle, &bundle_file);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let target = rt.block_on(Target::from_env(&tmp));
    if let Target::Real { client, .. } = &target {
        rt.block_on(refuse_foreign_objects(client, &bundle));
    }
    println!(
        "bundle: the embedded Argo CD chart's default render plus its Namespace, {} objects; against {}; binary {}",
        bundle.len(),
        target.name(),
        bin.display()
    );
    match &kubectl {
        Some(k) => println!(
            "kubectl: {} (runs interleaved with tendril's, each on a fresh state)",
            k.display()
        ),
        None => println!(
            "kubectl: not on PATH (or TENDRIL_BENCH_KUBECTL=none): no side-by-side comparison"
        ),
    }
    let (mut tendril, mut kube) = (Series::default(), Series::default());
    for run in 0..runs {
        rt.block_on(async {
            let fresh = target.fresh(&bundle, &format!("t{run}")).await;
            let t1 = run_tendril(&bin, &bundle_file, &fresh).await;
            let t2 = run_tendril(&bin, &bundle_file, &fresh).await;
            drop(fresh);
            let mut line = format!(
                "run {run}: tendril first {:.0} ms, {} requests{} ({} created), {:.1} MB; re-apply {:.0} ms, {} requests ({} unchanged), {:.1} MB",
                t1.wall.as_secs_f64() * 1e3,
                t1.requests,
                t1.server_counted
                    .map(|c| format!(" (server counted {c})"))
                    .unwrap_or_default(),
                count(&t1.stdout, "created"),
                t1.rss_mb,
                t2.wall.as_secs_f64() * 1e3,
                t2.requests,
                count(&t2.stdout, "unchanged"),
                t2.rss_mb,
            );
            tendril.push(&t1, &t2);
            if let Some(k) = &kubectl {
                let fresh = target.fresh(&bundle, &format!("k{run}")).await;
                let k1 = run_kubectl(k, &bundle_file, &fresh).await;
                let k2 = run_kubectl(k, &bundle_file, &fresh).await;
                drop(fresh);
                line.push_str(&format!(
                    "; kubectl first {:.0} ms, {} requests, {:.1} MB; re-apply {:.0} ms, {} requests, {:.1} MB",
                    k1.wall.as_secs_f64() * 1e3,
                    k1.requests,
                    k1.rss_mb,
                    k2.wall.as_secs_f64() * 1e3,
                    k2.requests,
                    k2.rss_mb,
                ));
                kube.push(&k1, &k2);
            }
            println!("{line}");
        });
    }
    println!("medians of {runs} runs against {}:", target.name());
    println!("  {}", tendril.summary("tendril"));
    if kubectl.is_some() {
        println!("  {}", kube.summary("kubectl apply --server-side"));
        println!(
            "  kubectl / tendril (median of the pairs): first apply {:.2}x, re-apply {:.2}x",
            ratios(&kube.first, &tendril.first),
            ratios(&kube.again, &tendril.again)
        );
    } else {
        println!("  kubectl: not on PATH, no ratio");
    }
    if matches!(target, Target::TestServer { .. }) {
        let (mut noticed, mut returned, mut write) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (n, r, w) = rt.block_on(readiness_latency(&bundle));
            println!(
                "readiness: last Deployment ready (status write acknowledged), noticed {n:.1} ms later, apply returned {r:.1} ms later (the write took {w:.1} ms)"
            );
            noticed.push(n);
            returned.push(r);
            write.push(w);
        }
        println!(
            "  readiness latency, median of {runs}: noticed {:.1} ms, apply returned {:.1} ms after the last status write was acknowledged (max {:.1} ms)",
            median(noticed),
            median(returned.clone()),
            returned.iter().copied().fold(0.0, f64::max)
        );
    } else {
        println!(
            "  readiness latency: measured on the in-repo test API server only (on a real cluster the controllers decide when workloads are ready)"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
