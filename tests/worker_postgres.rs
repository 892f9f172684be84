//! The worker loop on the PostgreSQL queue (a real PostgreSQL): several
//! workers on one database, finalization of DEPLOY results, cancellation
//! requests, stale-worker recovery by a live worker's housekeeping.

use std::sync::Arc;
use std::time::Duration;
use tendril::Secret;
use tendril::job::{JobFile, JobType};
use tendril::queue::postgres::PgQueue;
use tendril::worker::{
    JobOutcome, JobRunner, RetryPolicy, RunContext, Shutdown, WorkerConfig, run_worker,
};
use tendril_testkit::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

async fn db() -> (String, Client) {
    let url = Postgres::shared().fresh_database().await;
    let mut c = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .unwrap();
    tendril::queue::postgres::migrate(&mut c).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    (url, client)
}

const SNAPSHOT: &str = r#"{"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "local"}"#;

async fn vine_with_jobs(c: &Client, plans: usize, deploy: bool) -> String {
    let vine: String = c
        .query_one(
            "INSERT INTO vines (vineyard_id, status) VALUES (gen_random_uuid(), 'PROVISIONING') RETURNING id::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for _ in 0..plans {
        c.execute(
            "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
             SELECT 'PLAN', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid",
            &[&vine, &SNAPSHOT],
        )
        .await
        .unwrap();
    }
    if deploy {
        c.execute(
            "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id)
             SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id FROM provision_jobs
             WHERE vine_id = $1::text::uuid ORDER BY created_at LIMIT 1",
            &[&vine],
        )
        .await
        .unwrap();
    }
    vine
}

fn fast() -> WorkerConfig {
    WorkerConfig {
        claim_interval: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(100),
        log_flush_interval: Duration::from_millis(50),
        cancel_check_interval: Duration::from_millis(30),
        retry: RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        },
        ..WorkerConfig::default()
    }
}

/// Succeeds after a few lines; DEPLOY jobs report cluster facts.
struct Deployer;

impl JobRunner for Deployer {
    async fn run(&self, job: JobFile, ctx: RunContext) -> JobOutcome {
        for i in 0..3 {
            ctx.logs.stdout(format!("{} step {i}", job.job.job_type));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        match job.job.job_type {
            JobType::Plan | JobType::Destroy => {
                JobOutcome::success(serde_json::json!({"change_summary": {"add": 3}}))
            }
            JobType::Deploy => JobOutcome::success(serde_json::json!({
                "cluster_name": format!("c-{}", job.job.vine_id),
                "cluster_endpoint": "https://k8s.example", "cluster_arn": "arn:aws:eks:eu-west-1:123456789012:cluster/c",
                "argocd_url": "https://argocd.example", "argocd_admin_password": "pw",
                "databases": [], "caches": [{"name": "sessions", "primary_endpoint": "p", "reader_endpoint": "r"}]
            })),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_drain_one_database_and_finalize_deploys() {
    let (url, c) = db().await;
    let mut vines = Vec::new();
    for _ in 0..10 {
        vines.push(vine_with_jobs(&c, 3, true).await);
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let q = Arc::new(
            PgQueue::open(Secret::new(url.clone()), &format!("pw{w}"), None)
                .await
                .unwrap(),
        );
        let cfg = WorkerConfig {
            exit_when_idle: true,
            ..fast()
        };
        handles.push(tokio::spawn(run_worker(
            q,
            Arc::new(Deployer),
            cfg,
            Shutdown::default(),
            Arc::new(|_| {}),
        )));
    }
    // exit_when_idle stops a worker at its first empty claim, which can come
    // while others still hold the last jobs of busy vines: loop until done.
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap().unwrap().jobs;
    }
    let mut left: i64 = c
        .query_one(
            "SELECT count(*) FROM provision_jobs WHERE status = 'QUEUED'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    while left > 0 {
        let q = Arc::new(
            PgQueue::open(Secret::new(url.clone()), "finisher", None)
                .await
                .unwrap(),
        );
        let cfg = WorkerConfig {
            exit_when_idle: true,
            ..fast()
        };
        total += run_worker(
            q,
            Arc::new(Deployer),
            cfg,
            Shutdown::default(),
            Arc::new(|_| {}),
        )
        .await
        .unwrap()
        .jobs;
        left = c
            .query_one(
                "SELECT count(*) FROM provision_jobs WHERE status = 'QUEUED'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    }
    assert_eq!(total, 40);
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE attempts = 1),
                    count(*) FILTER (WHERE job_type = 'DEPLOY' AND finalized_at IS NOT NULL)
             FROM provision_jobs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 40);
    assert_eq!(row.get::<_, i64>(1), 40, "every job ran exactly once");
    assert_eq!(row.get::<_, i64>(2), 10);
    let active: i64 = c
        .query_one(
            "SELECT count(*) FROM vines v JOIN vine_cluster k ON k.vine_id = v.id JOIN vine_caches h ON h.vine_id = v.id
             WHERE v.status = 'ACTIVE' AND k.cluster_name = 'c-' || v.id::text AND h.primary_endpoint = 'p'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 10);
    let logs: i64 = c
        .query_one(
            "SELECT count(DISTINCT job_id) FROM provision_job_logs WHERE log_chunk LIKE '%step 2%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logs, 40);
    let offline: i64 = c
        .query_one("SELECT count(*) FROM workers WHERE status = 'OFFLINE'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(offline >= 4);
}

/// Runs until cancelled.
struct Long;

impl JobRunner for Long {
    async fn run(&self, _job: JobFile, ctx: RunContext) -> JobOutcome {
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return JobOutcome::cancelled("terraform interrupted"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => ctx.logs.stdout("applying"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_job_and_fails_the_vine() {
    let (url, c) = db().await;
    let vine = vine_with_jobs(&c, 0, false).await;
    let plan: String = c
        .query_one(
            "INSERT INTO provision_jobs (job_type, status, vine_id, vineyard_id, config_snapshot)
             SELECT 'PLAN', 'SUCCESS', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid RETURNING id::text",
            &[&vine, &SNAPSHOT],
        )
        .await
        .unwrap()
        .get(0);
    let deploy: String = c
        .query_one(
            "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id)
             SELECT 'DEPLOY', vine_id, vineyard_id, config_snapshot, id FROM provision_jobs WHERE id = $1::text::uuid
             RETURNING id::text",
            &[&plan],
        )
        .await
        .unwrap()
        .get(0);
    let q = Arc::new(
        PgQueue::open(Secret::new(url.clone()), "w", None)
            .await
            .unwrap(),
    );
    let cfg = WorkerConfig {
        max_jobs: Some(1),
        ..fast()
    };
    let worker = tokio::spawn(run_worker(
        q,
        Arc::new(Long),
        cfg,
        Shutdown::default(),
        Arc::new(|_| {}),
    ));
    // Wait until it runs and logs, then cancel from the "control plane".
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM provision_job_logs WHERE job_id = $1::text::uuid",
                &[&deploy],
            )
            .await
            .unwrap()
            .get(0);
        if n > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.execute(
        "SELECT request_job_cancel($1::text::uuid, 'cancelled by a user')",
        &[&deploy],
    )
    .await
    .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.cancelled, 1);
    let row = c
        .query_one(
            "SELECT j.status, j.error_message, v.status, v.error_message FROM provision_jobs j JOIN vines v ON v.id = j.vine_id
             WHERE j.id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "CANCELLED");
    assert!(
        row.get::<_, String>(1)
            .contains("requested by the control plane")
    );
    assert_eq!(row.get::<_, String>(2), "FAILED");
    let logs: String = c
        .query_one(
            "SELECT string_agg(log_chunk, '' ORDER BY id) FROM provision_job_logs WHERE job_id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .unwrap()
        .get(0);
    assert!(logs.contains("ended CANCELLED"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_recovers_a_dead_workers_job_and_runs_it() {
    let (url, c) = db().await;
    vine_with_jobs(&c, 1, false).await;
    // A worker claims the job and dies without a word.
    let dead = PgQueue::open(Secret::new(url.clone()), "dead", None)
        .await
        .unwrap();
    let claimed = dead.claim().await.unwrap().unwrap();
    drop(dead);
    c.execute(
        "UPDATE workers SET last_heartbeat = now() - interval '5 minutes' WHERE id = 'dead'",
        &[],
    )
    .await
    .unwrap();
    let q = Arc::new(
        PgQueue::open(Secret::new(url.clone()), "live", None)
            .await
            .unwrap(),
    );
    let cfg = WorkerConfig {
        max_jobs: Some(1),
        ..fast()
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_worker(
            q,
            Arc::new(Deployer),
            cfg,
            Shutdown::default(),
            Arc::new(|_| {}),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.succeeded, 1);
    let row = c
        .query_one(
            "SELECT status, worker_id, attempts FROM provision_jobs WHERE id = $1::text::uuid",
            &[&claimed.job.id.0],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "SUCCESS");
    assert_eq!(row.get::<_, String>(1), "live");
    assert_eq!(row.get::<_, i32>(2), 2);
    let dead_status: String = c
        .query_one("SELECT status FROM workers WHERE id = 'dead'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead_status, "OFFLINE");
}
