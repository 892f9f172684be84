//! `tendril worker --listen`: `/healthz` and `/metrics` of a real worker
//! process on a real PostgreSQL running real PLAN and DEPLOY jobs
//! (terraform), the database stopped and started again underneath it, and a
//! port that cannot be bound.
//!
//! The metrics are read with a strict check of the Prometheus text
//! exposition format (`exposition` below) rather than by grepping.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tendril::Secret;
use tendril_testkit::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_tendril");

const MAIN_TF: &str = r#"
variable "project_name" { type = string }
variable "environment" { type = string }
variable "region" { type = string }
variable "size" { type = number }

resource "terraform_data" "thing" {
  input = var.size
}

# outputs shaped like an EKS platform's, so that the DEPLOY reads its facts
output "eks_cluster_name" {
  value = "shop-${terraform_data.thing.output}"
}

output "eks_cluster_endpoint" {
  value = "https://shop.eks.example.com"
}
"#;

fn terraform_available() -> bool {
    let ok = Command::new("terraform")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this worker test did not run !!!!!!!!\n"
        );
    }
    ok
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}")),
    }
}

/// `{a="x",b="y"}` (after the metric name) → labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((labels, text));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ','".into());
        }
    }
}

/// Checks `text` against the Prometheus text exposition format (0.0.4):
/// `# HELP` / `# TYPE` lines, one `# TYPE` per family before its samples,
/// valid names, quoted and escaped label values, float values, histogram
/// buckets cumulative and ending in `+Inf` equal to `_count`. Returns the
/// samples and the declared type of each family.
fn exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut types = BTreeMap::<String, String>::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    if !is_metric_name(name) {
                        return Err(at("bad family name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(at(format!("unknown type {t}")));
                    }
                    if samples
                        .iter()
                        .any(|s: &Sample| family_of(&s.name, &types) == name)
                    {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("second TYPE for the family".into()));
                    }
                }
                (Some("HELP"), Some(name), _) if is_metric_name(name) => {}
                _ => return Err(at("a comment that is neither HELP nor TYPE".into())),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("bad comment".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest.trim_start_matches(' ').split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &types);
        let Some(t) = types.get(family) else {
            return Err(at("a sample without a TYPE for its family".into()));
        };
        let suffix_ok = match t.as_str() {
            "counter" => name.ends_with("_total"),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{family}{s}")),
            _ => name == family,
        };
        if !suffix_ok {
            return Err(at(format!("sample name does not fit a {t}")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // histograms: cumulative buckets, +Inf == count
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series = BTreeMap::<Vec<(String, String)>, Vec<(f64, f64)>>::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = parse_value(s.labels.get("le").ok_or("bucket without le")?)?;
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in series {
            for w in buckets.windows(2) {
                if !(w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                    return Err(format!(
                        "{family}{key:?}: buckets not cumulative: {buckets:?}"
                    ));
                }
            }
            let last = buckets.last().ok_or("no bucket")?;
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                            == key
                })
                .ok_or(format!("{family}{key:?}: no _count"))?;
            if last.0 != f64::INFINITY || last.1 != count.value {
                return Err(format!(
                    "{family}{key:?}: +Inf bucket {last:?} != count {}",
                    count.value
                ));
            }
        }
    }
    Ok((samples, types))
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for s in ["_total", "_bucket", "_sum", "_count"] {
        if let Some(f) = name.strip_suffix(s)
            && types.contains_key(f)
        {
            return f;
        }
    }
    name
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_format_check_refuses_what_is_not_the_exposition_format() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    // (a counter's family is named without _total in 0.0.4 too; both spellings resolve)
    assert!(exposition(good).is_ok(), "{:?}", exposition(good));
    for bad in [
        "a 1\n",                                                                          // no TYPE
        "# TYPE a gauge\na{x=1} 1\n", // unquoted label
        "# TYPE a gauge\na one\n",    // not a number
        "# TYPE a counter\na 1\n",    // counter without _total
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n", // +Inf != count
        "# comment\n",
    ] {
        assert!(exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

/// A worker process whose stderr is collected (and which said where it listens).
struct Worker {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Worker {
    fn spawn(args: &[&str], tmp: &std::path::Path) -> Worker {
        let mut child = Command::new(BIN)
            .arg("worker")
            .args(args)
            .env("TMPDIR", tmp)
            .env_remove("TENDRIL_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Worker { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The address it serves on (from its "serving ... on http://ADDR" line).
    fn address(&self) -> String {
        let start = Instant::now();
        loop {
            if let Some(addr) = self
                .stderr()
                .lines()
                .find_map(|l| l.strip_prefix("serving /healthz and /metrics on http://"))
            {
                return addr.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the worker never said where it listens:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, r.text().await.unwrap())
}

/// Polls `/healthz` until its status is `want`; returns the body.
async fn wait_health(base: &str, want: u16, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let (status, _, body) = get(&format!("{base}/healthz")).await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "/healthz still {status} after {limit:?} (wanted {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn migrated(url: &str) -> Client {
    let mut c = tendril::queue::postgres::connect(&Secret::new(url.to_string()))
        .await
        .unwrap();
    tendril::queue::postgres::migrate(&mut c).await.unwrap();
    let (db, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    db
}

/// Queues a PLAN on a new vine (and a DEPLOY of it); returns the job ids.
async fn queue(db: &Client, size: serde_json::Value, deploy: bool) -> Vec<String> {
    let snapshot = serde_json::json!({"project_name": "shop", "environment": "prod",
        "region": "eu-west-1", "provider": "local", "size": size})
    .to_string();
    let plan: String = db
        .query_one(
            "WITH v AS (INSERT INTO vines (vineyard_id, status) VALUES (gen_random_uuid(), 'PLANNING') RETURNING *)
             INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
             SELECT 'PLAN', id, vineyard_id, $1::text::jsonb FROM v RETURNING id::text",
            &[&snapshot],
        )
        .await
        .unwrap()
        .get(0);
    let mut ids = vec![plan.clone()];
    if deploy {
        ids.push(
            db.query_one(
                "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id, created_at)
                 SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id, created_at + interval '1 ms'
                 FROM provision_jobs WHERE id = $1::text::uuid RETURNING id::text",
                &[&plan],
            )
            .await
            .unwrap()
            .get(0),
        );
    }
    ids
}

async fn wait_ended(db: &Client, ids: &[String], worker: &Worker) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for id in ids {
            let s: String = db
                .query_one(
                    "SELECT status FROM provision_jobs WHERE id = $1::text::uuid",
                    &[id],
                )
                .await
                .unwrap()
                .get(0);
            statuses.push(s);
        }
        if statuses
            .iter()
            .all(|s| matches!(s.as_str(), "SUCCESS" | "FAILED" | "CANCELLED"))
        {
            return statuses;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "jobs still {statuses:?}; worker:\n{}",
            worker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn world() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("infra")).unwrap();
    std::fs::write(dir.path().join("infra/main.tf"), MAIN_TF).unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    let runner = dir.path().join("runner.yaml");
    std::fs::write(
        &runner,
        // a terraform-only runner; each vine gets its own local state (the default path)
        "terraform: {workdir: infra, backend: {local: {}}}\nartifacts: {store: local, dir: artifacts}\nkubernetes: {no_cluster: true}\n",
    )
    .unwrap();
    (dir, runner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_database_and_metrics_count_real_jobs() {
    if !terraform_available() {
        return;
    }
    // a cluster of its own: this test stops it
    let pg = Postgres::start();
    let url = pg.fresh_database().await;
    let db = migrated(&url).await;
    let (dir, runner) = world();
    let ok = queue(&db, serde_json::json!(3), true).await;
    // a PLAN terraform refuses: `size` is not a number
    let bad = queue(&db, serde_json::json!("three"), false).await;

    let worker = Worker::spawn(
        &[
            "--database-url",
            &url,
            "--worker-id",
            "health-1",
            "--runner-config",
            runner.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--claim-interval",
            "100ms",
            "--heartbeat-interval",
            "200ms",
            "--stale-heartbeat",
            "2s",
            "--log-flush-interval",
            "200ms",
        ],
        &dir.path().join("tmp"),
    );
    let base = format!("http://{}", worker.address());
    let mut all = ok.clone();
    all.extend(bad.iter().cloned());
    let statuses = wait_ended(&db, &all, &worker).await;
    let errors: Vec<Option<String>> = db
        .query(
            "SELECT error_message FROM provision_jobs ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        statuses,
        ["SUCCESS", "SUCCESS", "FAILED"],
        "{errors:?}\n{}",
        worker.stderr()
    );

    let body = wait_health(&base, 200, Duration::from_secs(10)).await;
    assert!(body.starts_with("ok: claiming, idle"), "{body}");

    let (status, ct, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let (samples, types) = exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, t) in [
        ("tendril_worker_jobs_claimed_total", "counter"),
        ("tendril_worker_jobs_finished_total", "counter"),
        ("tendril_worker_job_duration_seconds", "histogram"),
        ("tendril_worker_jobs_running", "gauge"),
        ("tendril_worker_last_heartbeat_age_seconds", "gauge"),
        ("tendril_worker_current_job_age_seconds", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(t),
            "{family}:\n{text}"
        );
    }
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(
        v("tendril_worker_jobs_claimed_total", &[("job_type", "plan")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(
            "tendril_worker_jobs_claimed_total",
            &[("job_type", "deploy")]
        ),
        Some(1.0),
        "{text}"
    );
    let finished = "tendril_worker_jobs_finished_total";
    assert_eq!(
        v(finished, &[("job_type", "plan"), ("status", "success")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(finished, &[("job_type", "plan"), ("status", "failed")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(finished, &[("job_type", "deploy"), ("status", "success")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(
            "tendril_worker_job_duration_seconds_count",
            &[("job_type", "plan")]
        ),
        Some(2.0)
    );
    let took = v(
        "tendril_worker_job_duration_seconds_sum",
        &[("job_type", "deploy")],
    )
    .unwrap();
    assert!(took > 0.0 && took < 180.0, "{took}");
    assert_eq!(
        v("tendril_worker_jobs_running", &[("job_type", "plan")]),
        Some(0.0)
    );
    let age = v("tendril_worker_last_heartbeat_age_seconds", &[]).unwrap();
    assert!((0.0..2.0).contains(&age), "{age}");
    assert!(!text.contains(&ok[0]), "a job id became a label:\n{text}");

    // OpenMetrics for a scraper that asks for it
    let om = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
    assert_eq!(get(&format!("{base}/nothing")).await.0, 404);

    // The database goes away: 503 once the heartbeat window (2 s) has passed
    // without a heartbeat, saying why; back to 200 when it returns.
    pg.pause();
    let down = Instant::now();
    let body = wait_health(&base, 503, Duration::from_secs(15)).await;
    assert!(
        down.elapsed() >= Duration::from_millis(1500),
        "503 too early: {body}"
    );
    assert!(body.contains("heartbeat window of 2 s"), "{body}");
    let (_, _, text) = get(&format!("{base}/metrics")).await;
    let (samples, _) = exposition(&text).unwrap();
    let age = value(&samples, "tendril_worker_last_heartbeat_age_seconds", &[]).unwrap();
    assert!(age > 2.0, "{age}");
    pg.resume();
    let body = wait_health(&base, 200, Duration::from_secs(60)).await;
    assert!(body.starts_with("ok:"), "{body}\n{}", worker.stderr());
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_in_use_fails_at_start_before_any_claim() {
    let url = Postgres::shared().fresh_database().await;
    let db = migrated(&url).await;
    let (dir, runner) = world();
    let jobs = queue(&db, serde_json::json!(1), false).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = Worker::spawn(
        &[
            "--database-url",
            &url,
            "--runner-config",
            runner.to_str().unwrap(),
            "--listen",
            &addr,
        ],
        &dir.path().join("tmp"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = worker.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker kept running with its port taken:\n{}",
            worker.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    let err = worker.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr} (--listen)")) && err.contains("in use"),
        "{err}"
    );
    let s: String = db
        .query_one(
            "SELECT status FROM provision_jobs WHERE id = $1::text::uuid",
            &[&jobs[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(s, "QUEUED", "a job was claimed before the port was checked");
    drop(taken);

    // a malformed address is refused by the argument parser
    let out = Command::new(BIN)
        .args(["worker", "--database-url", &url, "--listen", "9090"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("write HOST:PORT"), "{err}");
}
