//! `tendril worker` on a PostgreSQL queue running real PLAN, DEPLOY and
//! DESTROY jobs (real terraform, a `local-exec` provisioner that sleeps): a
//! long apply that prints only terraform's progress outlives the silence
//! threshold, nothing of a job outlives it when the worker or the job
//! process is killed, and a DESTROY after a DEPLOY empties the state and
//! finalizes the vine to DESTROYED.
//!
//! Each test prints a loud SKIPPED line when terraform is not on PATH.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tendril::Secret;
use tendril_testkit::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_tendril");

const MAIN_TF: &str = r#"
variable "project_name" { type = string }
variable "environment" { type = string }
variable "region" { type = string }
variable "sleep_seconds" { type = number }
variable "revision" {
  type    = number
  default = 1
}
variable "pid_file" { type = string }

resource "terraform_data" "first" {
  input = var.revision
}

resource "terraform_data" "slow" {
  depends_on = [terraform_data.first]
  input      = "${var.revision}-${var.sleep_seconds}"

  provisioner "local-exec" {
    command = "echo $$ > '${var.pid_file}'; exec sleep ${var.sleep_seconds}"
  }
}

output "first" {
  value = terraform_data.first.output
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

/// One vine's world: a terraform configuration, a local state and artifact
/// store, the worker's TMPDIR, and a fresh database.
struct World {
    dir: tempfile::TempDir,
    url: String,
    db: Client,
    vine: String,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("infra")).unwrap();
        std::fs::write(dir.path().join("infra/main.tf"), MAIN_TF).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        std::fs::write(
            dir.path().join("runner.yaml"),
            format!(
                // a terraform-only runner: DEPLOYs leave clusters alone (the
                // jobs' cloud identity is `local` and gives none)
                "terraform: {{workdir: infra, backend: {{local: {{path: {}}}}}}}\nartifacts: {{store: local, dir: artifacts}}\nkubernetes: {{no_cluster: true}}\n",
                dir.path().join("state.tfstate").display()
            ),
        )
        .unwrap();
        let url = Postgres::shared().fresh_database().await;
        let mut c = tendril::queue::postgres::connect(&Secret::new(url.clone()))
            .await
            .unwrap();
        tendril::queue::postgres::migrate(&mut c).await.unwrap();
        let (db, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let vine: String = db
            .query_one(
                "INSERT INTO vines (vineyard_id, status) VALUES (gen_random_uuid(), 'PLANNING') RETURNING id::text",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        World { dir, url, db, vine }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Queues a PLAN and a DEPLOY of its plan; returns their ids.
    async fn queue_plan_and_deploy(&self, sleep: u64, revision: u64) -> (String, String) {
        let snapshot = serde_json::json!({
            "project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "local",
            "sleep_seconds": sleep, "revision": revision,
            "pid_file": self.path("provisioner.pid").display().to_string(),
        })
        .to_string();
        let plan: String = self
            .db
            .query_one(
                "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
                 SELECT 'PLAN', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid
                 RETURNING id::text",
                &[&self.vine, &snapshot],
            )
            .await
            .unwrap()
            .get(0);
        let deploy: String = self
            .db
            .query_one(
                "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id, created_at)
                 SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id, created_at + interval '1 ms'
                 FROM provision_jobs WHERE id = $1::text::uuid RETURNING id::text",
                &[&plan],
            )
            .await
            .unwrap()
            .get(0);
        (plan, deploy)
    }

    fn worker(&self, id: &str, extra: &[&str]) -> Child {
        Command::new(BIN)
            .args([
                "worker",
                "--database-url",
                &self.url,
                "--worker-id",
                id,
                "--runner-config",
                self.path("runner.yaml").to_str().unwrap(),
                "--claim-interval",
                "100ms",
                "--heartbeat-interval",
                "500ms",
                "--log-flush-interval",
                "200ms",
                "--cancel-check-interval",
                "200ms",
            ])
            .args(extra)
            .env("TMPDIR", self.path("tmp"))
            .env_remove("TENDRIL_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn job(&self, id: &str) -> (String, Option<String>, Option<String>) {
        let r = self
            .db
            .query_one(
                "SELECT status, error_message, error_phase FROM provision_jobs WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    }

    async fn logs(&self, id: &str) -> String {
        self.db
            .query_one(
                "SELECT coalesce(string_agg(log_chunk, '' ORDER BY id), '') FROM provision_job_logs WHERE job_id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn wait_finished(
        &self,
        id: &str,
        limit: Duration,
    ) -> (String, Option<String>, Option<String>) {
        let start = Instant::now();
        loop {
            let j = self.job(id).await;
            if matches!(j.0.as_str(), "SUCCESS" | "FAILED" | "CANCELLED") {
                return j;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} still {} after {limit:?}:\n{}",
                j.0,
                self.logs(id).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_log(&self, id: &str, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let logs = self.logs(id).await;
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} never logged {needle:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Processes on this host whose environment points into this world's
    /// TMPDIR: every process of a job the worker started.
    fn job_processes(&self) -> Vec<String> {
        let needle = format!("TMPDIR={}", self.path("tmp").display());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(needle.as_bytes()))
            {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                // the worker itself is not a process of a job
                if !cmd.contains(" worker --database-url ") {
                    out.push(format!("{pid}: {cmd}"));
                }
            }
        }
        out
    }

    async fn wait_no_job_processes(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let left = self.job_processes();
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "processes of the job outlived it by {limit:?}: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn tmp_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// `terraform show -json` of the state: the resource addresses it records.
    fn state_resources(&self) -> Vec<String> {
        let out = Command::new("terraform")
            .args(["show", "-json"])
            .arg(self.path("state.tfstate"))
            .current_dir(self.path("infra"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.pointer("/values/root_module/resources")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A clean PLAN + DEPLOY of the vine after the interruption: terraform
    /// applies the new plan (the state is not locked, not stale).
    async fn replan_and_deploy_applies(&self, worker: &str) {
        let (plan, deploy) = self.queue_plan_and_deploy(1, 2).await;
        // a dead worker's job is recovered after 3 s of silence of its heartbeat
        let mut w = self.worker(worker, &["--stale-heartbeat", "3s"]);
        let (status, err, _) = self.wait_finished(&plan, Duration::from_secs(120)).await;
        assert_eq!(status, "SUCCESS", "{err:?}\n{}", self.logs(&plan).await);
        let (_, err, phase) = self.wait_finished(&deploy, Duration::from_secs(120)).await;
        let logs = self.logs(&deploy).await;
        assert!(
            logs.contains("terraform_data.slow: create complete"),
            "the re-deploy did not apply ({phase:?}: {err:?}):\n{logs}"
        );
        assert_ne!(phase.as_deref(), Some("terraform_apply"), "{err:?}\n{logs}");
        let _ = w.kill();
        let _ = w.wait();
        let state = self.state_resources();
        assert!(
            state.contains(&"terraform_data.slow".to_string()),
            "{state:?}"
        );
    }
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_apply_printing_only_terraform_progress_outlives_the_silence_threshold() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    // terraform prints "still creating" every 10 s: a 12 s silence threshold,
    // and a resource that takes 32 s.
    let (plan, deploy) = w.queue_plan_and_deploy(32, 1).await;
    let mut worker = w.worker("live-1", &["--stale-silence", "12s"]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    let (status, err, phase) = w.wait_finished(&deploy, Duration::from_secs(180)).await;
    let logs = w.logs(&deploy).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        !err.as_deref()
            .unwrap_or_default()
            .contains("silent too long"),
        "stale-job recovery took the healthy job ({status}): {err:?}\n{logs}"
    );
    assert!(
        logs.contains("terraform_data.slow: still creating"),
        "terraform's progress is not in the job log:\n{logs}"
    );
    assert!(
        logs.contains("terraform_data.slow: create complete after 3"),
        "the 32 s resource did not complete:\n{logs}"
    );
    assert_ne!(phase.as_deref(), Some("terraform_apply"), "{err:?}\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_mid_apply_leaves_no_process_and_a_consistent_state() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    let (plan, deploy) = w.queue_plan_and_deploy(300, 1).await;
    let mut worker = w.worker("doomed", &["--stale-heartbeat", "3s"]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    w.wait_log(
        &deploy,
        "terraform_data.slow: create…",
        Duration::from_secs(120),
    )
    .await;
    // the provisioner is running
    let start = Instant::now();
    while !w.path("provisioner.pid").exists() {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill9(worker.id());
    let _ = worker.wait();
    // The job process gets SIGINT (parent-death signal), interrupts terraform,
    // which stops the provisioner and writes its state.
    w.wait_no_job_processes(Duration::from_secs(60)).await;
    let state = w.state_resources();
    assert!(
        state.contains(&"terraform_data.first".to_string()),
        "terraform did not write its state on the way out: {state:?}"
    );
    // terraform stopped by its interrupt, not killed: it recorded the
    // resource whose provisioner it interrupted (tainted). A job process
    // that died of a broken stderr pipe (the worker was its reader) used to
    // SIGKILL terraform here, leaving the resource out of the state and, on
    // S3, the state lock behind.
    assert!(
        state.contains(&"terraform_data.slow".to_string()),
        "terraform was killed instead of interrupted: {state:?}"
    );
    // The next worker sweeps what the dead one left in TMPDIR, recovers the
    // job (FAILED, vine free), and a new PLAN + DEPLOY applies cleanly.
    w.replan_and_deploy_applies("heir").await;
    let (status, err, _) = w.job(&deploy).await;
    assert_eq!(status, "FAILED", "{err:?}");
    assert!(w.tmp_entries().is_empty(), "{:?}", w.tmp_entries());
    w.wait_no_job_processes(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_job_process_mid_apply_leaves_no_process_and_a_consistent_state() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    let (plan, deploy) = w.queue_plan_and_deploy(300, 1).await;
    let mut worker = w.worker("survivor", &[]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    let logs = w
        .wait_log(
            &deploy,
            "terraform_data.slow: create…",
            Duration::from_secs(120),
        )
        .await;
    let start = Instant::now();
    while !w.path("provisioner.pid").exists() {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid: u32 = logs
        .lines()
        .find_map(|l| l.split("(pid ").nth(1))
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no child pid in the log:\n{logs}"));
    kill9(pid);
    let (status, err, _) = w.wait_finished(&deploy, Duration::from_secs(60)).await;
    assert_eq!(status, "FAILED");
    let logs = w.logs(&deploy).await;
    assert!(
        err.as_deref()
            .unwrap_or_default()
            .contains("without writing its result"),
        "{err:?}\n{logs}"
    );
    // terraform gets SIGINT when `tendril deploy` dies (its parent-death
    // signal) and often stops, provisioner and all, before the worker looks;
    // when it has not, the worker says so and stops what is left (which of
    // the two happens is a race, so the log is not asserted). Either way the
    // job is reported only once no process of it is left.
    assert!(w.job_processes().is_empty(), "{:#?}", w.job_processes());
    assert!(w.tmp_entries().is_empty(), "{:?}", w.tmp_entries());
    let state = w.state_resources();
    assert!(
        state.contains(&"terraform_data.first".to_string()),
        "{state:?}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    w.replan_and_deploy_applies("survivor-2").await;
    assert!(w.tmp_entries().is_empty(), "{:?}", w.tmp_entries());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_tendril_deploy_interrupts_its_terraform() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    let (plan, _) = w.queue_plan_and_deploy(300, 1).await;
    let mut worker = w.worker("planner", &["--max-jobs", "1"]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    let _ = worker.wait();
    // `tendril deploy` on its own (no worker), killed mid-apply.
    let job = serde_json::json!({
        "job": {"id": "standalone", "job_type": "DEPLOY", "vine_id": w.vine, "vineyard_id": "vy",
                "plan_job_id": plan,
                "config_snapshot": {"project_name": "shop", "environment": "prod", "region": "eu-west-1",
                    "provider": "local", "sleep_seconds": 300, "revision": 1,
                    "pid_file": w.path("provisioner.pid").display().to_string()}},
        "cloud_identity": {"provider": "local"},
        "tendril": {"terraform": {"workdir": w.path("infra"), "backend": {"local": {"path": w.path("state.tfstate")}}},
                    "artifacts": {"store": "local", "dir": w.path("artifacts")},
                    "kubernetes": {"no_cluster": true}}
    });
    std::fs::write(w.path("deploy.json"), job.to_string()).unwrap();
    let mut deploy = Command::new(BIN)
        .args(["deploy", "--job"])
        .arg(w.path("deploy.json"))
        .env("TMPDIR", w.path("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !w.path("provisioner.pid").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill9(deploy.id());
    let _ = deploy.wait();
    w.wait_no_job_processes(Duration::from_secs(60)).await;
    let state = w.state_resources();
    assert!(
        state.contains(&"terraform_data.first".to_string()),
        "terraform did not write its state: {state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_fails_with_exactly_the_contract_sentence() {
    const STALE: &str = "Configuration has changed since the plan was generated. Please re-plan.";
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    let (plan, deploy) = w.queue_plan_and_deploy(0, 1).await;
    // The configuration changes between the PLAN and its DEPLOY.
    w.db.execute(
        "UPDATE provision_jobs SET config_snapshot = jsonb_set(config_snapshot, '{revision}', '7')
         WHERE id = $1::text::uuid",
        &[&deploy],
    )
    .await
    .unwrap();
    let mut worker = w.worker("stale", &[]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    let (status, err, phase) = w.wait_finished(&deploy, Duration::from_secs(120)).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(status, "FAILED");
    assert_eq!(err.as_deref(), Some(STALE), "{}", w.logs(&deploy).await);
    assert_eq!(phase.as_deref(), Some("config_hash"));
    let vine: Option<String> =
        w.db.query_one(
            "SELECT error_message FROM vines WHERE id = $1::text::uuid",
            &[&w.vine],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(vine.as_deref(), Some(STALE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vines_on_the_local_backend_each_have_their_own_state() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    // The default local path: one state per vine under the runner config's directory.
    std::fs::write(
        w.path("runner.yaml"),
        "terraform: {workdir: infra, backend: {local: {}}}\nartifacts: {store: local, dir: artifacts}\nkubernetes: {no_cluster: true}\n",
    )
    .unwrap();
    let mut vines = vec![w.vine.clone()];
    for _ in 0..2 {
        vines.push(
            w.db.query_one(
                "INSERT INTO vines (vineyard_id, status) VALUES (gen_random_uuid(), 'PLANNING') RETURNING id::text",
                &[],
            )
            .await
            .unwrap()
            .get(0),
        );
    }
    // Every PLAN first, then every DEPLOY: with one shared state, the second
    // DEPLOY's plan would be stale after the first DEPLOY.
    let mut plans = Vec::new();
    for (i, vine) in vines.iter().enumerate() {
        let snapshot = serde_json::json!({"project_name": format!("p{i}"), "environment": "prod",
            "region": "eu-west-1", "provider": "local", "sleep_seconds": 0, "revision": 1,
            "pid_file": "/dev/null"})
        .to_string();
        let id: String = w
            .db
            .query_one(
                "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
                 SELECT 'PLAN', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid
                 RETURNING id::text",
                &[vine, &snapshot],
            )
            .await
            .unwrap()
            .get(0);
        plans.push(id);
    }
    let mut deploys = Vec::new();
    for plan in &plans {
        let id: String = w
            .db
            .query_one(
                "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id)
                 SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id FROM provision_jobs
                 WHERE id = $1::text::uuid RETURNING id::text",
                &[plan],
            )
            .await
            .unwrap()
            .get(0);
        deploys.push(id);
    }
    let mut worker = w.worker("one", &[]);
    for (plan, deploy) in plans.iter().zip(&deploys) {
        let (status, err, _) = w.wait_finished(plan, Duration::from_secs(120)).await;
        assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(plan).await);
        let (_, err, phase) = w.wait_finished(deploy, Duration::from_secs(120)).await;
        let logs = w.logs(deploy).await;
        assert!(
            logs.contains("terraform_data.slow: create complete"),
            "{phase:?}: {err:?}\n{logs}"
        );
    }
    let _ = worker.kill();
    let _ = worker.wait();
    for (i, vine) in vines.iter().enumerate() {
        let vineyard: String =
            w.db.query_one(
                "SELECT vineyard_id::text FROM vines WHERE id = $1::text::uuid",
                &[vine],
            )
            .await
            .unwrap()
            .get(0);
        let state = w.path(&format!("{vineyard}/p{i}/prod/eu-west-1/terraform.tfstate"));
        assert!(
            state.is_file(),
            "no state of vine {i} at {}",
            state.display()
        );
    }
}

/// Outputs that make the vine's facts an EKS cluster with one database, so
/// that a DEPLOY finalizes `vine_cluster` and `vine_databases` rows.
const CLUSTER_OUTPUTS_TF: &str = r#"
output "eks_cluster_name" {
  value = "shop-prod"
}

output "rds_cluster_database_name" {
  value = "orders"
}

output "rds_cluster_endpoint" {
  value = "orders.cluster-x.eu-west-1.rds.amazonaws.com"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_job_run_by_the_worker_empties_the_state_and_finalizes_the_vine_destroyed() {
    if !terraform_available() {
        return;
    }
    let w = World::new().await;
    std::fs::write(w.path("infra/outputs.tf"), CLUSTER_OUTPUTS_TF).unwrap();
    let (plan, deploy) = w.queue_plan_and_deploy(0, 1).await;
    let mut worker = w.worker("one", &[]);
    let (status, err, _) = w.wait_finished(&plan, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&plan).await);
    let (status, err, _) = w.wait_finished(&deploy, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCESS", "{err:?}\n{}", w.logs(&deploy).await);
    let rows = |table: &'static str| {
        let db = &w.db;
        let vine = w.vine.clone();
        async move {
            db.query_one(
                &format!("SELECT count(*) FROM {table} WHERE vine_id = $1::text::uuid"),
                &[&vine],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(
        (rows("vine_cluster").await, rows("vine_databases").await),
        (1, 1)
    );
    assert_eq!(
        w.state_resources(),
        ["terraform_data.first", "terraform_data.slow"]
    );

    // the DESTROY of the vine, queued after its DEPLOY
    let destroy: String =
        w.db.query_one(
            "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
             SELECT 'DESTROY', vine_id, vineyard_id, config_snapshot FROM provision_jobs
             WHERE id = $1::text::uuid RETURNING id::text",
            &[&deploy],
        )
        .await
        .unwrap()
        .get(0);
    let (status, err, phase) = w.wait_finished(&destroy, Duration::from_secs(120)).await;
    let logs = w.logs(&destroy).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(status, "SUCCESS", "{phase:?}: {err:?}\n{logs}");

    // terraform destroyed everything; the (empty) state stays for audit
    assert_eq!(w.state_resources(), Vec::<String>::new());
    assert!(w.path("state.tfstate").is_file());

    // finalized: the vine is DESTROYED by this job, its records are gone
    let vine = w
        .db
        .query_one(
            "SELECT status, error_message, last_deploy_job_id::text FROM vines WHERE id = $1::text::uuid",
            &[&w.vine],
        )
        .await
        .unwrap();
    assert_eq!(vine.get::<_, String>(0), "DESTROYED");
    assert_eq!(vine.get::<_, Option<String>>(1), None);
    assert_eq!(
        vine.get::<_, Option<String>>(2).as_deref(),
        Some(destroy.as_str())
    );
    assert_eq!(
        (rows("vine_cluster").await, rows("vine_databases").await),
        (0, 0)
    );

    // the job process's report, as the worker stored it
    let metadata: serde_json::Value =
        w.db.query_one(
            "SELECT execution_metadata FROM provision_jobs WHERE id = $1::text::uuid",
            &[&destroy],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        metadata["change_summary"],
        serde_json::json!({"add": 0, "change": 0, "remove": 2}),
        "{metadata}"
    );
    assert!(
        metadata["timings_ms"].get("terraform_destroy").is_some(),
        "{metadata}"
    );
    assert!(logs.contains("terraform_data.slow"), "{logs}");
}
