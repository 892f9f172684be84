//! Apply benchmark: `tendril apply` of a real bundle against an API server.
//!
//! Run it with `scripts/bench-apply.sh` (which builds the release binary
//! first), or `cargo bench --bench apply`. It measures, for the `tendril`
//! binary as a user runs it:
//!
//! 1. a first apply of the bundle (no `--wait`): wall time of the whole
//!    process (kubeconfig, reading, discovery, staged apply) and peak RSS;
//! 2. a re-apply of the same bundle (everything unchanged);
//! 3. on the in-repo server: `--wait`, with a simulated controller that makes
//!    every workload ready at once after they all exist; the readiness
//!    latency is the time from the last status write being acknowledged to
//!    the `tendril` process having exited.
//!
//! Environment:
//! - `TENDRIL_E2E_KUBECONFIG`: a real cluster to use instead of the in-repo server
//!   (then step 3 is skipped: the real controllers decide when things are ready);
//! - `TENDRIL_BENCH_BUNDLE`: the bundle (default: the reference Argo CD
//!   rendering under `../shared` or `../../shared`, read at run time, never committed);
//! - `TENDRIL_BIN`: the binary (default: `$CARGO_TARGET_DIR/release/tendril`);
//! - `TENDRIL_BENCH_RUNS`: repetitions (default 5).

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tendril::apply::parse_manifests;
use tendril_testkit::apiserver::ApiServer;

struct Cluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    _server: Option<ApiServer>,
    real: bool,
}

async fn cluster(tmp: &Path, run: usize) -> Cluster {
    if let Some(kc) = std::env::var_os("TENDRIL_E2E_KUBECONFIG").filter(|v| !v.is_empty()) {
        let kc = PathBuf::from(kc);
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kc).expect("read TENDRIL_E2E_KUBECONFIG"),
            &Default::default(),
        )
        .await
        .expect("usable kubeconfig");
        return Cluster {
            client: kube::Client::try_from(config).expect("client"),
            kubeconfig: kc,
            _server: None,
            real: true,
        };
    }
    let server = ApiServer::start();
    let kubeconfig = tmp.join(format!("kubeconfig-{run}"));
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    Cluster {
        client: server.client(),
        kubeconfig,
        _server: Some(server),
        real: false,
    }
}

fn find_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TENDRIL_BENCH_BUNDLE") {
        return Some(PathBuf::from(p));
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../shared", "../../shared"]
        .iter()
        .map(|d| here.join(d).join("reference/argo-cd/rendered/default.yaml"))
        .find(|p| p.is_file())
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

struct Measured {
    wall: Duration,
    rss_kb: u64,
    exit: Instant,
    report: Value,
    stderr: String,
    /// Requests tendril sent (its summary line).
    requests: u64,
}

async fn run_tendril(
    bin: &Path,
    bundle: &Path,
    kubeconfig: &Path,
    namespace: &str,
    wait: bool,
) -> Measured {
    let mut cmd = tokio::process::Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("TENDRIL_BENCH_RSS_KB=%M")
        .arg(bin)
        .arg("apply")
        .arg("-f")
        .arg(bundle)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace])
        .args(["--output", "json", "--timeout", "5m"])
        .args(["--applyset", "tendril-bench", "--prune"])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if wait {
        cmd.arg("--wait");
    }
    let start = Instant::now();
    let out = cmd.output().await.expect("run tendril under /usr/bin/time");
    let exit = Instant::now();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss_kb = stderr
        .lines()
        .find_map(|l| l.strip_prefix("TENDRIL_BENCH_RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        panic!("tendril apply failed:\n{stderr}");
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
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
        .unwrap_or(0);
    Measured {
        requests,
        wall: exit - start,
        rss_kb,
        exit,
        report,
        stderr,
    }
}

fn dyn_api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: &str,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Waits until every workload exists, then makes them all ready as their
/// controllers would; returns when the last status write was acknowledged.
async fn controller(client: kube::Client, workloads: Vec<(String, String, String)>) -> Instant {
    let plural = |k: &str| match k {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "Job" => "jobs",
        _ => unreachable!(),
    };
    let api_version = |k: &str| if k == "Job" { "batch/v1" } else { "apps/v1" };
    let mut gens = Vec::new();
    for (kind, ns, name) in &workloads {
        let api = dyn_api(&client, api_version(kind), kind, plural(kind), ns);
        let obj = loop {
            if let Ok(Some(o)) = api.get_opt(name).await {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        gens.push(obj.metadata.generation.unwrap_or(1));
    }
    // tendril is waiting by now; make everything ready at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for ((kind, ns, name), generation) in workloads.iter().zip(gens) {
        let api = dyn_api(&client, api_version(kind), kind, plural(kind), ns);
        let status = match kind.as_str() {
            "Deployment" => {
                json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
            }
            "StatefulSet" => {
                json!({"observedGeneration": generation, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1, "currentRevision": "r1", "updateRevision": "r1"})
            }
            _ => json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        };
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("status write");
    }
    Instant::now()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() {
    // `cargo bench` passes --bench; a `cargo test` run of this target does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(bundle) = find_bundle() else {
        eprintln!("apply bench: no bundle (set TENDRIL_BENCH_BUNDLE); skipped");
        return;
    };
    let bin = find_binary();
    if !bin.is_file() {
        eprintln!(
            "apply bench: {} missing; run scripts/bench-apply.sh or set TENDRIL_BIN; skipped",
            bin.display()
        );
        return;
    }
    let runs: usize = std::env::var("TENDRIL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let text = std::fs::read_to_string(&bundle).expect("read bundle");
    let mut manifests =
        parse_manifests(&bundle.display().to_string(), &text).expect("bundle parses");
    // The reference bundle without Helm hooks, plus the Namespace it installs into.
    manifests.retain(|m| m.annotation("helm.sh/hook").is_none());
    let mut namespaces: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.namespace().map(str::to_string))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let workloads: Vec<(String, String, String)> = manifests
        .iter()
        .filter(|m| matches!(m.kind(), "Deployment" | "StatefulSet" | "Job"))
        .map(|m| {
            (
                m.kind().to_string(),
                m.namespace().unwrap_or("default").to_string(),
                m.name().to_string(),
            )
        })
        .collect();
    let tmp = std::env::temp_dir().join(format!("tendril-apply-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let mut docs: Vec<String> = namespaces
        .iter()
        .map(|ns| {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string()
        })
        .collect();
    docs.extend(manifests.iter().map(|m| m.object.to_string()));
    let objects = docs.len();
    let bundle = tmp.join("bundle.yaml");
    std::fs::write(&bundle, docs.join("\n---\n")).expect("write the bench bundle");
    let set_namespace = namespaces
        .first()
        .cloned()
        .unwrap_or_else(|| "default".into());
    drop(manifests);
    drop(text);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "bundle: {} ({objects} objects), binary: {}",
        bundle.display(),
        bin.display()
    );
    let (mut first, mut again, mut latency, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut apply_ms = Vec::new();
    let mut requests: Vec<(u64, u64)> = Vec::new();
    let mut real = false;
    for run in 0..runs {
        rt.block_on(async {
            let c = cluster(&tmp, run).await;
            real = c.real;
            let m1 = run_tendril(&bin, &bundle, &c.kubeconfig, &set_namespace, false).await;
            let m2 = run_tendril(&bin, &bundle, &c.kubeconfig, &set_namespace, false).await;
            let created = m1.report["objects"].as_array().map(|o| o.iter().filter(|x| x["action"] == "created").count()).unwrap_or(0);
            let unchanged = m2.report["objects"].as_array().map(|o| o.iter().filter(|x| x["action"] == "unchanged").count()).unwrap_or(0);
            let mut line = format!(
                "run {run}: first apply {:>6.1} ms, {} requests (in-library {} ms, {created} created, {} waves), peak RSS {:>5.1} MB; re-apply {:>6.1} ms, {} requests ({unchanged} unchanged), peak RSS {:>5.1} MB",
                m1.wall.as_secs_f64() * 1e3,
                m1.requests,
                m1.report["apply_millis"],
                m1.report["waves"],
                m1.rss_kb as f64 / 1024.0,
                m2.wall.as_secs_f64() * 1e3,
                m2.requests,
                m2.rss_kb as f64 / 1024.0,
            );
            requests.push((m1.requests, m2.requests));
            if m1.report.is_null() {
                line.push_str(&format!("\n{}", m1.stderr));
            }
            first.push(m1.wall.as_secs_f64() * 1e3);
            again.push(m2.wall.as_secs_f64() * 1e3);
            apply_ms.push(m1.report["apply_millis"].as_f64().unwrap_or(0.0));
            rss.push(m1.rss_kb.max(m2.rss_kb) as f64 / 1024.0);
            if !c.real {
                // A fresh server for the readiness run: everything is created and waited for.
                let c3 = cluster(&tmp, run + 1000).await;
                let ctl = tokio::spawn(controller(c3.client.clone(), workloads.clone()));
                let m3 = run_tendril(&bin, &bundle, &c3.kubeconfig, &set_namespace, true).await;
                let last_ready = ctl.await.expect("controller");
                let lat = m3.exit.saturating_duration_since(last_ready);
                line.push_str(&format!(
                    "; --wait: readiness noticed and process exited {:.1} ms after the last object became ready, peak RSS {:.1} MB",
                    lat.as_secs_f64() * 1e3,
                    m3.rss_kb as f64 / 1024.0
                ));
                latency.push(lat.as_secs_f64() * 1e3);
                rss.push(m3.rss_kb as f64 / 1024.0);
            }
            println!("{line}");
        });
    }
    println!(
        "median over {runs} runs against {}: first apply {:.1} ms ({} requests; library {:.1} ms), re-apply {:.1} ms ({} requests), max peak RSS {:.1} MB{}",
        if real {
            "TENDRIL_E2E_KUBECONFIG"
        } else {
            "the in-repo test API server"
        },
        median(first),
        requests.first().map_or(0, |r| r.0),
        median(apply_ms),
        median(again),
        requests.first().map_or(0, |r| r.1),
        rss.iter().copied().fold(0.0, f64::max),
        if latency.is_empty() {
            String::new()
        } else {
            format!(
                ", readiness latency {:.1} ms (max {:.1} ms)",
                median(latency.clone()),
                latency.iter().copied().fold(0.0, f64::max)
            )
        }
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
