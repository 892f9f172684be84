//! A soak of the PostgreSQL queue with real jobs: 8 `tendril worker`
//! processes, 25 vines × 2 rounds of PLAN + DEPLOY (100 jobs, real terraform,
//! state in moto's S3), one worker SIGKILLed in the middle of a DEPLOY's
//! apply (then started again). Checked at the end:
//!
//! - exactly once: every job ended once (SUCCESS/FAILED), none is left
//!   QUEUED or running, and only the killed DEPLOY was recovered;
//! - no overlap: the jobs of one vine ran one after another, and the job
//!   after the killed one started only once no process of it was left;
//! - no orphan: no process of any job is left, and every worker's TMPDIR is
//!   empty;
//! - state consistent: no state lock is left, and `terraform show` of every
//!   vine's state in the bucket records what its last DEPLOY created.
//!
//! Slow (minutes) and heavy (8 terraforms at once), so ignored by default:
//! `scripts/worker-soak.sh` runs it and prints the figures.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tendril::Secret;
use tendril_testkit::moto::{self, Moto};
use tendril_testkit::postgres::Postgres;
use tokio_postgres::NoTls;

/// The tendril binary: cargo's, or `TENDRIL_SOAK_BIN` (a copy, so that a
/// rebuild during the minutes-long soak does not pull the binary away from
/// under the running workers).
fn bin() -> String {
    std::env::var("TENDRIL_SOAK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tendril").to_string())
}
const WORKERS: usize = 8;
const VINES: usize = 25;
const ROUNDS: usize = 2;

const MAIN_TF: &str = r#"
variable "project_name" { type = string }
variable "environment" { type = string }
variable "region" { type = string }
variable "sleep_seconds" { type = number }
variable "revision" { type = number }

resource "terraform_data" "first" {
  input = var.revision
}

resource "terraform_data" "slow" {
  depends_on = [terraform_data.first]
  input      = "${var.revision}-${var.sleep_seconds}"

  provisioner "local-exec" {
    command = "exec sleep ${var.sleep_seconds}"
  }
}

# outputs shaped like an EKS platform's: the DEPLOY reads its facts from them
output "eks_cluster_name" {
  value = "${var.project_name}-${terraform_data.slow.output}"
}

output "eks_cluster_endpoint" {
  value = "https://${var.project_name}.eks.example.com"
}
"#;

fn spawn_worker(root: &Path, url: &str, k: usize) -> Child {
    let tmp = root.join(format!("w{k}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(format!("w{k}.log")))
        .unwrap();
    Command::new(bin())
        .args([
            "worker",
            "--database-url",
            url,
            "--worker-id",
            &format!("w{k}"),
        ])
        .arg("--runner-config")
        .arg(root.join("runner.json"))
        .args([
            "--claim-interval",
            "200ms",
            "--heartbeat-interval",
            "1s",
            "--stale-heartbeat",
            "10s",
            "--log-flush-interval",
            "500ms",
        ])
        .env("TMPDIR", &tmp)
        .env_remove("TENDRIL_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `terraform show -json` of the state at `key` in moto's bucket (through a
/// fresh `terraform init` of the S3 backend): the `input` of each resource,
/// by address.
fn state_inputs(
    dir: &Path,
    moto: &Moto,
    key: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("main.tf"), "terraform {\n  backend \"s3\" {}\n}\n").unwrap();
    let run = |args: &[String]| {
        let out = Command::new("terraform")
            .args(args)
            .current_dir(dir)
            .envs(moto.client_env("eu-west-1"))
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform {args:?} of {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let mut init: Vec<String> = ["init", "-input=false", "-no-color"]
        .map(String::from)
        .to_vec();
    for kv in [
        "bucket=vine-terraform-state".to_string(),
        format!("key={key}"),
        "region=eu-west-1".to_string(),
        format!("endpoints={{s3=\"{}\"}}", moto.endpoint()),
        "skip_credentials_validation=true".to_string(),
        "skip_requesting_account_id=true".to_string(),
        "skip_metadata_api_check=true".to_string(),
        "skip_region_validation=true".to_string(),
        "skip_s3_checksum=true".to_string(),
        "use_path_style=true".to_string(),
    ] {
        init.push(format!("-backend-config={kv}"));
    }
    run(&init);
    let show: serde_json::Value =
        serde_json::from_slice(&run(&["show".into(), "-json".into()])).unwrap();
    show.pointer("/values/root_module/resources")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|x| {
                    Some((
                        x["address"].as_str()?.to_string(),
                        x.pointer("/values/input").cloned()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose TMPDIR lies under `dir`: processes of the jobs of the
/// workers whose TMPDIR it is.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = format!("TMPDIR={}", dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|v| v.starts_with(needle.as_bytes()))
        {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // the workers themselves are not jobs
            if !cmd.contains(" worker ") {
                out.push(format!("{pid}: {cmd}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run scripts/worker-soak.sh"]
async fn eight_workers_a_hundred_real_jobs_one_worker_killed_mid_deploy() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("infra")).unwrap();
    std::fs::write(root.join("infra/main.tf"), MAIN_TF).unwrap();
    let moto = Moto::start();
    let resp = reqwest::Client::new()
        .put(format!("{}/vine-terraform-state", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    std::fs::write(
        root.join("runner.json"),
        serde_json::json!({"tendril": {
            "terraform": {"workdir": root.join("infra"), "backend": {
                "endpoint": moto.endpoint(), "region": "eu-west-1",
                "access_key_id": moto::ACCESS_KEY_ID, "secret_access_key": moto::SECRET_ACCESS_KEY}},
            "artifacts": {"store": "local", "dir": root.join("artifacts")},
            // a terraform-only runner: DEPLOYs leave clusters alone (the
            // jobs' cloud identity is `local` and gives none)
            "kubernetes": {"no_cluster": true}}})
        .to_string(),
    )
    .unwrap();
    let url = Postgres::shared().fresh_database().await;
    let mut c = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .unwrap();
    tendril::queue::postgres::migrate(&mut c).await.unwrap();
    let (db, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);

    // 25 vines, each PLAN → DEPLOY → PLAN → DEPLOY; vine 0's first DEPLOY
    // takes a minute (the one whose worker is killed), the others 2 s.
    let vineyard: String = db
        .query_one("SELECT gen_random_uuid()::text", &[])
        .await
        .unwrap()
        .get(0);
    let mut vines = Vec::new();
    for v in 0..VINES {
        let vine: String = db
            .query_one(
                "INSERT INTO vines (vineyard_id, status) VALUES ($1::text::uuid, 'PLANNING') RETURNING id::text",
                &[&vineyard],
            )
            .await
            .unwrap()
            .get(0);
        for round in 0..ROUNDS {
            let sleep = if v == 0 && round == 0 { 60 } else { 2 };
            let snapshot = serde_json::json!({"project_name": format!("soak{v}"), "environment": "prod",
                "region": "eu-west-1", "provider": "local", "sleep_seconds": sleep, "revision": round + 1})
            .to_string();
            db.execute(
                // explicit times: PLAN r, DEPLOY r, PLAN r+1 ... in this order
                "WITH p AS (
                   INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, created_at)
                   VALUES ('PLAN', $1::text::uuid, $2::text::uuid, $3::text::jsonb,
                           now() + make_interval(secs => $4::int * 0.01)) RETURNING *)
                 INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id, created_at)
                 SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id, created_at + interval '1 ms' FROM p",
                &[&vine, &vineyard, &snapshot, &(round as i32)],
            )
            .await
            .unwrap();
        }
        vines.push(vine);
    }
    let total = VINES * ROUNDS * 2;

    let mut workers: Vec<Child> = (0..WORKERS).map(|k| spawn_worker(&root, &url, k)).collect();

    // Kill the worker that runs vine 0's long DEPLOY, mid-apply.
    let long_deploy: String = db
        .query_one(
            "SELECT id::text FROM provision_jobs WHERE vine_id = $1::text::uuid AND job_type = 'DEPLOY'
             ORDER BY created_at LIMIT 1",
            &[&vines[0]],
        )
        .await
        .unwrap()
        .get(0);
    let victim = loop {
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "the long DEPLOY never ran"
        );
        let row = db
            .query_one(
                "SELECT j.worker_id, coalesce(string_agg(l.log_chunk, ''), '') FROM provision_jobs j
                 LEFT JOIN provision_job_logs l ON l.job_id = j.id
                 WHERE j.id = $1::text::uuid GROUP BY j.worker_id",
                &[&long_deploy],
            )
            .await
            .unwrap();
        let worker: Option<String> = row.get(0);
        let logs: String = row.get(1);
        if let Some(w) = worker
            && logs.contains("terraform_data.slow: create…")
        {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let k: usize = victim.trim_start_matches('w').parse().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &workers[k].id().to_string()])
        .status();
    let _ = workers[k].wait();
    let victim_tmp = root.join(format!("w{k}"));
    while !processes_under(&victim_tmp).is_empty() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(120),
            "the killed worker's job outlived it: {:#?}",
            processes_under(&victim_tmp)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orphan_gone_after = killed_at.elapsed();
    let gone_at: jiff::Timestamp = db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    // The worker comes back (as after a restart by its supervisor).
    workers[k] = spawn_worker(&root, &url, k);

    // Wait for every job to end.
    loop {
        let open: i64 = db
            .query_one(
                "SELECT count(*) FROM provision_jobs WHERE status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{open} jobs still open after an hour"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }

    // Exactly once.
    let rows = db
        .query(
            "SELECT id::text, vine_id::text, job_type, status, attempts, error_phase, error_message,
                    started_at, completed_at, created_at
               FROM provision_jobs ORDER BY vine_id, created_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), total);
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    let mut failed_phases = std::collections::BTreeMap::<String, usize>::new();
    for r in &rows {
        let id: String = r.get(0);
        let status: String = r.get(3);
        let attempts: i32 = r.get(4);
        *by_status
            .entry(format!("{} {status}", r.get::<_, String>(2)))
            .or_default() += 1;
        if status == "FAILED" {
            let phase: Option<String> = r.get(5);
            *failed_phases
                .entry(phase.unwrap_or_else(|| "(recovered)".into()))
                .or_default() += 1;
        }
        assert_eq!(attempts, 1, "job {id} ran {attempts} times");
    }
    let long = rows
        .iter()
        .find(|r| r.get::<_, String>(0) == long_deploy)
        .unwrap();
    assert_eq!(long.get::<_, String>(3), "FAILED");
    let long_error: String = long.get(6);
    let long_done: jiff::Timestamp = long.get(8);
    let recovered_after = long_done.duration_since(gone_at).as_secs_f64();
    assert!(long_error.contains("stopped heartbeating"), "{long_error}");

    // No overlap within a vine; the job after the killed one started after
    // its processes were gone.
    for vine in &vines {
        let jobs: Vec<_> = rows
            .iter()
            .filter(|r| r.get::<_, String>(1) == *vine)
            .collect();
        for pair in jobs.windows(2) {
            let done: Option<jiff::Timestamp> = pair[0].get(8);
            let next: Option<jiff::Timestamp> = pair[1].get(7);
            if let (Some(done), Some(next)) = (done, next) {
                assert!(
                    next >= done,
                    "vine {vine}: job {} started before job {} ended",
                    pair[1].get::<_, String>(0),
                    pair[0].get::<_, String>(0)
                );
            }
            if pair[0].get::<_, String>(0) == long_deploy
                && let Some(next) = next
            {
                assert!(
                    next >= gone_at,
                    "the job after the killed one overlapped its leftovers"
                );
            }
        }
    }

    // No orphan.
    assert!(
        processes_under(&root).is_empty(),
        "{:#?}",
        processes_under(&root)
    );
    for k in 0..WORKERS {
        let left: Vec<_> = std::fs::read_dir(root.join(format!("w{k}")))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "worker w{k} left {left:?} in its TMPDIR");
    }

    let mut errors = std::collections::BTreeSet::new();
    for r in &rows {
        if let Some(e) = r.get::<_, Option<String>>(6) {
            errors.insert(format!(
                "{}: {}",
                r.get::<_, String>(2),
                e.chars().take(300).collect::<String>()
            ));
        }
    }
    eprintln!("soak: jobs by type and status {by_status:?}; failed by phase {failed_phases:?}");
    for e in &errors {
        eprintln!("soak: error seen: {e}");
    }
    let listing = reqwest::get(format!(
        "{}/vine-terraform-state?list-type=2",
        moto.endpoint()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();

    // State consistent: every vine has its own state object in the bucket,
    // and no state lock was left behind by the interrupted apply. (moto
    // refuses unsigned GETs of objects, so the contents are not read here.)
    for v in 0..VINES {
        let key = format!("{vineyard}/soak{v}/prod/eu-west-1/terraform.tfstate");
        assert!(
            listing.contains(&format!("<Key>{key}</Key>")),
            "vine {v}: no state at {key}; the bucket holds: {listing}"
        );
    }
    assert!(
        !listing.contains(".tflock"),
        "a state lock was left behind: {listing}"
    );
    // ... and `terraform show` of each vine's state records what its last
    // DEPLOY (round 2, revision 2, which every vine must have applied) created.
    let mut applied = 0;
    for (v, vine) in vines.iter().enumerate() {
        let last = rows
            .iter()
            .filter(|r| r.get::<_, String>(1) == *vine && r.get::<_, String>(2) == "DEPLOY")
            .last()
            .unwrap();
        assert_eq!(
            last.get::<_, String>(3),
            "SUCCESS",
            "vine {v}: its last DEPLOY {}: {:?}",
            last.get::<_, String>(0),
            last.get::<_, Option<String>>(6)
        );
        let key = format!("{vineyard}/soak{v}/prod/eu-west-1/terraform.tfstate");
        let inputs = state_inputs(&root.join(format!("show/{v}")), &moto, &key);
        let want: std::collections::BTreeMap<String, serde_json::Value> = [
            ("terraform_data.first".to_string(), serde_json::json!(2)),
            ("terraform_data.slow".to_string(), serde_json::json!("2-2")),
        ]
        .into();
        assert_eq!(inputs, want, "vine {v}: the state at {key}");
        applied += 1;
    }
    eprintln!(
        "soak: {total} jobs, {WORKERS} workers, {:.0} s in all; {by_status:?}; failed by phase {failed_phases:?}; \
         worker w{k} SIGKILLed mid-DEPLOY, its job's processes gone {:.1} s later, the job recovered (FAILED) {recovered_after:.1} s after that; {applied}/{VINES} vines' states (terraform show) hold their last DEPLOY and no lock is left",
        elapsed.as_secs_f64(),
        orphan_gone_after.as_secs_f64()
    );
}
