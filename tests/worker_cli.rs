//! `tendril worker` as a process: configuration errors, a job end to end
//! against the Trellis test server, SIGTERM draining, a refused token.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tendril_testkit::trellis::Trellis;

const BIN: &str = env!("CARGO_BIN_EXE_tendril");
const TOKEN: &str = "cli-token-98765";

fn worker(url: &str, token: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "worker",
        "--claim-interval",
        "100ms",
        "--heartbeat-interval",
        "200ms",
        "--log-flush-interval",
        "100ms",
    ])
    .env("TRELLIS_URL", url)
    .env("GRAPE_WORKER_ID", "cli-worker")
    .env("GRAPE_WORKER_TOKEN", token)
    .env_remove("TENDRIL_DATABASE_URL")
    .stdin(Stdio::null());
    c
}

#[test]
fn configuration_errors_say_what_to_set() {
    let out = Command::new(BIN)
        .arg("worker")
        .env_remove("TRELLIS_URL")
        .env_remove("TENDRIL_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TRELLIS_URL") && err.contains("--database-url"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["worker", "--trellis-url", "http://127.0.0.1:9"])
        .env_remove("GRAPE_WORKER_ID")
        .env_remove("GRAPE_WORKER_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("GRAPE_WORKER_ID") && err.contains("GRAPE_WORKER_TOKEN"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runner.yaml");
    std::fs::write(&cfg, "tendril:\n  terraform: {workdirr: x}\n").unwrap();
    let out = worker("http://127.0.0.1:9", TOKEN)
        .args(["--runner-config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("runner.yaml") && err.contains("workdirr"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_end_to_end_through_the_binary() {
    let t = Trellis::start("cli-worker", TOKEN).await;
    t.push_job(serde_json::json!({
        "job": {"id": "cli-job-1", "job_type": "PLAN", "vine_id": "v", "vineyard_id": "vy",
                "config_snapshot": {"project_name": "p", "environment": "e", "region": "r", "provider": "local"}},
        "cloud_identity": {"provider": "local"}
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runner.yaml");
    std::fs::write(&cfg, "terraform: {workdir: infra, backend: {local: {path: state.tfstate}}}\nartifacts: {store: local, dir: artifacts}\n").unwrap();
    // a real configuration: the child `tendril plan` runs real terraform on it
    std::fs::create_dir(dir.path().join("infra")).unwrap();
    std::fs::write(
        dir.path().join("infra/main.tf"),
        "variable \"project_name\" {}\nresource \"terraform_data\" \"x\" { input = var.project_name }\noutput \"name\" { value = terraform_data.x.output }\n",
    )
    .unwrap();
    let url = t.url();
    let out = tokio::task::spawn_blocking(move || {
        worker(&url, TOKEN)
            .args(["--once", "--runner-config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("claimed PLAN job cli-job-1"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    let st = t.statuses();
    assert_eq!(st.first().unwrap().status, "PROCESSING");
    let last = st.last().unwrap();
    let logs = t.log_text("cli-job-1");
    assert_eq!(last.status, "SUCCESS", "{last:?}\n{logs}");
    assert!(
        dir.path().join("artifacts/cli-job-1/plan.tfplan").is_file(),
        "the PLAN job stored no artifact:\n{logs}"
    );
    assert!(
        logs.contains(
            "started `tendril plan --job /dev/stdin --report-file <scratch>/result.json`"
        ),
        "{logs}"
    );
    assert!(logs.contains("ended "), "{logs}");
    assert_eq!(t.heartbeats().last().unwrap()["status"], "DRAINING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let t = Trellis::start("cli-worker", TOKEN).await;
    let mut child = worker(&t.url(), TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while t
        .seen()
        .iter()
        .filter(|s| s.path == "/api/jobs/claim")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the worker never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(st.success());
    let out = tokio::task::spawn_blocking(move || {
        let _ = &mut child;
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("draining"), "{err}");
    assert_eq!(t.heartbeats().last().unwrap()["status"], "DRAINING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_with_a_clear_message() {
    let t = Trellis::start("cli-worker", "the-right-token").await;
    let url = t.url();
    let out = tokio::task::spawn_blocking(move || worker(&url, TOKEN).output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rejected this worker's credentials (HTTP 401)"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_mode_runs_a_job_and_goes_offline() {
    let pg = tendril_testkit::postgres::Postgres::shared();
    let url = pg.fresh_database().await;
    let mut c = tendril::queue::postgres::connect(&tendril::Secret::new(url.clone()))
        .await
        .unwrap();
    tendril::queue::postgres::migrate(&mut c).await.unwrap();
    let job: String = c
        .query_one(
            "WITH v AS (INSERT INTO vines (vineyard_id) VALUES (gen_random_uuid()) RETURNING id, vineyard_id)
             INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
             SELECT 'PLAN', id, vineyard_id,
                    '{\"project_name\": \"p\", \"environment\": \"e\", \"region\": \"r\", \"provider\": \"local\"}'::jsonb
             FROM v RETURNING id::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runner.yaml");
    std::fs::write(&cfg, "terraform: {workdir: infra, backend: {local: {path: state.tfstate}}}\nartifacts: {store: local, dir: artifacts}\n").unwrap();
    std::fs::create_dir(dir.path().join("infra")).unwrap();
    std::fs::write(
        dir.path().join("infra/main.tf"),
        "resource \"terraform_data\" \"x\" { input = \"pg\" }\n",
    )
    .unwrap();
    let u = url.clone();
    let cfg_path = cfg.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "worker",
                "--database-url",
                &u,
                "--worker-id",
                "cli-pg",
                "--once",
                "--runner-config",
                &cfg_path,
            ])
            .args(["--claim-interval", "100ms", "--log-flush-interval", "100ms"])
            .env_remove("TRELLIS_URL")
            .env("GRAPE_WORKER_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(&url) && !err.contains(TOKEN), "{err}");
    let row = c
        .query_one(
            "SELECT j.status, j.worker_id, w.status, w.token_hash IS NOT NULL,
                    (SELECT string_agg(log_chunk, '' ORDER BY id) FROM provision_job_logs WHERE job_id = j.id)
             FROM provision_jobs j, workers w WHERE j.id = $1::text::uuid AND w.id = 'cli-pg'",
            &[&job],
        )
        .await
        .unwrap();
    let status: String = row.get(0);
    let logs: String = row.get(4);
    assert_eq!(status, "SUCCESS", "{logs}");
    assert!(
        dir.path()
            .join(format!("artifacts/{job}/plan.tfplan"))
            .is_file()
    );
    assert_eq!(row.get::<_, String>(1), "cli-pg");
    assert_eq!(row.get::<_, String>(2), "OFFLINE");
    assert!(row.get::<_, bool>(3));
    assert!(
        logs.contains(
            "started `tendril plan --job /dev/stdin --report-file <scratch>/result.json`"
        ),
        "{logs}"
    );
}
