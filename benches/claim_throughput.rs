//! Claim throughput of the PostgreSQL queue: W workers (each its own
//! connections, as separate processes would have) drain a queue of PLAN jobs
//! spread over many vines.
//!
//! Two figures:
//! - `queue`: claim → PROCESSING → one log chunk → SUCCESS, straight calls
//!   (what the database can do);
//! - `loop`: the full worker loop (`run_worker`) with a runner that does
//!   nothing, so heartbeats, log shipping and retries are included.
//!
//! Runs against the throwaway PostgreSQL of the test kit (fsync off: the
//! numbers are CPU- and lock-bound, not disk-bound).
//! `cargo bench --bench claim_throughput -- [WORKERS] [JOBS]` (default 8 workers, 4000 jobs).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tendril::Secret;
use tendril::job::JobFile;
use tendril::queue::postgres::PgQueue;
use tendril::queue::{LogChunk, LogStream};
use tendril::worker::{JobOutcome, JobRunner, RunContext, Shutdown, WorkerConfig, run_worker};
use tendril_testkit::postgres::Postgres;
use tokio_postgres::NoTls;

struct Noop;

impl JobRunner for Noop {
    async fn run(&self, _job: JobFile, ctx: RunContext) -> JobOutcome {
        ctx.logs.stdout("planned");
        JobOutcome::success(serde_json::Value::Null)
    }
}

async fn seed(pg: &Postgres, jobs: usize) -> String {
    let url = pg.fresh_database().await;
    let mut c = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .expect("connect");
    tendril::queue::postgres::migrate(&mut c)
        .await
        .expect("migrate");
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    // 4 jobs per vine: the one-active-job-per-vine rule is exercised all along.
    let vines = jobs.div_ceil(4) as i32;
    client
        .execute(
            "WITH v AS (INSERT INTO vines (vineyard_id) SELECT gen_random_uuid() FROM generate_series(1, $1) RETURNING id, vineyard_id)
             INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, created_at)
             SELECT 'PLAN', v.id, v.vineyard_id,
                    '{\"project_name\": \"p\", \"environment\": \"e\", \"region\": \"r\", \"provider\": \"local\"}'::jsonb,
                    now() + make_interval(secs => n)
             FROM v, generate_series(1, 4) n",
            &[&vines],
        )
        .await
        .expect("seed");
    client.batch_execute("ANALYZE").await.expect("analyze");
    url
}

async fn queue_run(url: &str, workers: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let q = PgQueue::open(Secret::new(url.to_string()), &format!("bench-q{w}"), None)
            .await
            .expect("open");
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            let mut idle = 0;
            while idle < 20 {
                match q.claim().await.expect("claim") {
                    Some(j) => {
                        idle = 0;
                        q.start(&j.job.id).await.expect("start");
                        let chunk = LogChunk {
                            log_chunk: "planned\n".into(),
                            stream_type: LogStream::Stdout,
                        };
                        q.append_logs(&j.job.id, &chunk).await.expect("logs");
                        q.finish(&j.job.id, &JobOutcome::success(serde_json::Value::Null))
                            .await
                            .expect("finish");
                        n += 1;
                    }
                    None => {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("worker task");
    }
    total
}

async fn loop_run(url: &str, workers: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let q = Arc::new(
            PgQueue::open(Secret::new(url.to_string()), &format!("bench-l{w}"), None)
                .await
                .expect("open"),
        );
        let cfg = WorkerConfig {
            claim_interval: Duration::from_millis(2),
            log_flush_interval: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(1),
            cancel_check_interval: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let shutdown = Shutdown::default();
        tasks.push((
            shutdown.clone(),
            tokio::spawn(run_worker(
                q,
                Arc::new(Noop),
                cfg,
                shutdown,
                Arc::new(|_| {}),
            )),
        ));
    }
    // Stop every worker once all jobs are done.
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM provision_jobs WHERE status <> 'SUCCESS'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut total = 0;
    for (s, h) in tasks {
        s.drain.cancel();
        total += h.await.expect("worker task").expect("worker").jobs;
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let workers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(8);
    let jobs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pg = Postgres::start();
    rt.block_on(async {
        let url = seed(&pg, jobs).await;
        let t = Instant::now();
        let done = queue_run(&url, workers).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "queue: {workers} workers, {done} jobs in {secs:.2} s = {:.0} jobs/s",
            done as f64 / secs
        );
        let url = seed(&pg, jobs).await;
        let t = Instant::now();
        let done = loop_run(&url, workers).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "loop: {workers} workers, {done} jobs in {secs:.2} s = {:.0} jobs/s",
            done as f64 / secs
        );
    });
}
