//! The PostgreSQL queue against a real PostgreSQL (one cluster per test
//! binary, a fresh database per test).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendril::Secret;
use tendril::job::JobType;
use tendril::queue::postgres::{JobCheck, PgQueue};
use tendril::queue::{JobOutcome, LogChunk, LogStream, QueueError, WorkerState};
use tendril_testkit::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

async fn db() -> (String, Client) {
    let url = Postgres::shared().fresh_database().await;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    (url, client)
}

async fn open(url: &str, worker: &str) -> PgQueue {
    PgQueue::open(Secret::new(url.to_string()), worker, None)
        .await
        .unwrap()
}

async fn vine(c: &Client) -> String {
    c.query_one(
        "INSERT INTO vines (vineyard_id, name) VALUES (gen_random_uuid(), 'v') RETURNING id::text",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

const SNAPSHOT: &str = r#"{"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "local"}"#;

async fn job(c: &Client, vine: &str, job_type: &str) -> String {
    let plan: Option<String> = if job_type == "DEPLOY" {
        Some(
            c.query_one(
                "INSERT INTO provision_jobs (job_type, status, vine_id, vineyard_id, config_snapshot)
                 SELECT 'PLAN', 'SUCCESS', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid
                 RETURNING id::text",
                &[&vine, &SNAPSHOT],
            )
            .await
            .unwrap()
            .get(0),
        )
    } else {
        None
    };
    c.query_one(
        "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id)
         SELECT $2, id, vineyard_id, $3::text::jsonb, $4::text::uuid FROM vines WHERE id = $1::text::uuid
         RETURNING id::text",
        &[&vine, &job_type, &SNAPSHOT, &plan],
    )
    .await
    .unwrap()
    .get(0)
}

async fn status(c: &Client, job: &str) -> String {
    c.query_one(
        "SELECT status FROM provision_jobs WHERE id = $1::text::uuid",
        &[&job],
    )
    .await
    .unwrap()
    .get(0)
}

fn chunk(text: &str) -> LogChunk {
    LogChunk {
        log_chunk: format!("{text}\n"),
        stream_type: LogStream::Stdout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_jobs_and_concurrent_workers_claim_each_job_exactly_once() {
    let (url, c) = db().await;
    // Workers open concurrently: the migrations run once, under their lock.
    let mut opens = Vec::new();
    for w in 0..6 {
        let url = url.clone();
        opens.push(tokio::spawn(
            async move { open(&url, &format!("w{w}")).await },
        ));
    }
    let mut queues = Vec::new();
    for o in opens {
        queues.push(Arc::new(o.await.unwrap()));
    }
    let applied: i64 = c
        .query_one("SELECT count(*) FROM tendril_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        tendril::queue::postgres::MIGRATIONS.len() as i64,
        "each migration is recorded once"
    );

    // 15 vines with 8 jobs each: many chances for two workers to race on one vine.
    let mut all = HashSet::new();
    for _ in 0..15 {
        let v = vine(&c).await;
        for _ in 0..8 {
            all.insert(job(&c, &v, "PLAN").await);
        }
    }
    let claims: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let active: Arc<Mutex<HashSet<String>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for q in &queues {
        let (q, claims, active, violations) = (
            q.clone(),
            claims.clone(),
            active.clone(),
            violations.clone(),
        );
        let total = all.len();
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            loop {
                match q.claim().await.unwrap() {
                    None => {
                        if claims.lock().unwrap().len() >= total || idle > 2000 {
                            return;
                        }
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Some(j) => {
                        idle = 0;
                        let vine = j.job.vine_id.clone();
                        if !active.lock().unwrap().insert(vine.clone()) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("vine {vine} had two active jobs"));
                        }
                        claims
                            .lock()
                            .unwrap()
                            .push((j.job.id.0.clone(), q.worker_id().to_string()));
                        q.start(&j.job.id).await.unwrap();
                        q.append_logs(&j.job.id, &chunk("planning")).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        active.lock().unwrap().remove(&vine);
                        q.finish(
                            &j.job.id,
                            &JobOutcome::success(serde_json::json!({"ok": true})),
                        )
                        .await
                        .unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claims = claims.lock().unwrap().clone();
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    let mut seen = HashMap::new();
    for (j, w) in &claims {
        assert!(
            seen.insert(j.clone(), w.clone()).is_none(),
            "job {j} claimed twice"
        );
    }
    assert_eq!(seen.len(), all.len());
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), all);
    let workers_used: HashSet<_> = seen.values().collect();
    assert!(
        workers_used.len() > 1,
        "only one worker ever claimed: {workers_used:?}"
    );
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE attempts <> 1),
                    (SELECT count(*) FROM provision_job_logs)
             FROM provision_jobs WHERE job_type = 'PLAN'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), all.len() as i64);
    assert_eq!(row.get::<_, i64>(1), 0);
    assert_eq!(row.get::<_, i64>(2), all.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vine_never_has_two_active_jobs() {
    let (url, c) = db().await;
    let a = open(&url, "a").await;
    let b = open(&url, "b").await;
    let v = vine(&c).await;
    let first = job(&c, &v, "PLAN").await;
    let second = job(&c, &v, "DEPLOY").await;
    let other_vine = vine(&c).await;
    let third = job(&c, &other_vine, "PLAN").await;

    let got = a.claim().await.unwrap().unwrap();
    assert_eq!(got.job.id.0, first);
    // b must skip the vine's second job and take the other vine's.
    let got_b = b.claim().await.unwrap().unwrap();
    assert_eq!(got_b.job.id.0, third);
    assert!(
        b.claim().await.unwrap().is_none(),
        "the vine's DEPLOY was claimed while its PLAN runs"
    );
    a.start(&got.job.id).await.unwrap();
    a.finish(&got.job.id, &JobOutcome::failed("boom"))
        .await
        .unwrap();
    let got = b.claim().await.unwrap().unwrap();
    assert_eq!(got.job.id.0, second);
    assert_eq!(got.job.job_type, JobType::Deploy);
    assert!(got.job.plan_job_id.is_some());
    assert_eq!(status(&c, &second).await, "CLAIMED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_jobs_go_only_to_their_worker_and_first() {
    let (url, c) = db().await;
    let a = open(&url, "a").await;
    let b = open(&url, "b").await;
    let v1 = vine(&c).await;
    let v2 = vine(&c).await;
    let unassigned = job(&c, &v1, "PLAN").await;
    let assigned = job(&c, &v2, "PLAN").await;
    c.execute(
        "UPDATE provision_jobs SET assigned_worker_id = 'b' WHERE id = $1::text::uuid",
        &[&assigned],
    )
    .await
    .unwrap();
    let got = b.claim().await.unwrap().unwrap();
    assert_eq!(
        got.job.id.0, assigned,
        "a worker takes its assigned job before older unassigned ones"
    );
    b.finish(&got.job.id, &JobOutcome::success(serde_json::Value::Null))
        .await
        .unwrap();
    let assigned2 = job(&c, &v2, "PLAN").await;
    c.execute(
        "UPDATE provision_jobs SET assigned_worker_id = 'b' WHERE id = $1::text::uuid",
        &[&assigned2],
    )
    .await
    .unwrap();
    let got = a.claim().await.unwrap().unwrap();
    assert_eq!(got.job.id.0, unassigned);
    assert!(
        a.claim().await.unwrap().is_none(),
        "worker a took a job assigned to b"
    );
    assert_eq!(b.claim().await.unwrap().unwrap().job.id.0, assigned2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_workers_jobs_are_requeued_or_failed() {
    let (url, c) = db().await;
    let dead = open(&url, "dead").await;
    let live = open(&url, "live").await;
    let (v1, v2, v3) = (vine(&c).await, vine(&c).await, vine(&c).await);
    let plan = job(&c, &v1, "PLAN").await;
    let deploy = job(&c, &v2, "DEPLOY").await;
    let claimed = dead.claim().await.unwrap().unwrap();
    assert_eq!(claimed.job.id.0, plan);
    let running = dead.claim().await.unwrap().unwrap();
    assert_eq!(running.job.id.0, deploy);
    dead.start(&running.job.id).await.unwrap();
    // A live worker's job that has been silent too long.
    let silent = job(&c, &v3, "DEPLOY").await;
    let s = live.claim().await.unwrap().unwrap();
    assert_eq!(s.job.id.0, silent);
    live.start(&s.job.id).await.unwrap();

    // Nothing is stale yet.
    let none = live
        .recover_stale(Duration::from_secs(60), Duration::from_secs(300))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    c.batch_execute(
        "UPDATE workers SET last_heartbeat = now() - interval '2 minutes' WHERE id = 'dead';",
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE provision_jobs SET last_activity_at = now() - interval '6 minutes' WHERE id = $1::text::uuid",
        &[&silent],
    )
    .await
    .unwrap();
    let rec = live
        .recover_stale(Duration::from_secs(60), Duration::from_secs(300))
        .await
        .unwrap();
    let got: HashMap<String, String> = rec.into_iter().map(|r| (r.job.0, r.action)).collect();
    assert_eq!(got.get(&plan).map(String::as_str), Some("REQUEUED"));
    assert_eq!(got.get(&deploy).map(String::as_str), Some("FAILED"));
    assert_eq!(got.get(&silent).map(String::as_str), Some("FAILED"));
    assert_eq!(got.len(), 3);

    assert_eq!(status(&c, &plan).await, "QUEUED");
    assert_eq!(status(&c, &deploy).await, "FAILED");
    let row = c
        .query_one(
            "SELECT v.status, v.error_message, w.status FROM vines v, workers w
             WHERE v.id = $1::text::uuid AND w.id = 'dead'",
            &[&v2],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "FAILED",
        "a failed DEPLOY is finalized: vine FAILED"
    );
    assert!(row.get::<_, String>(1).contains("re-plan"));
    assert_eq!(row.get::<_, String>(2), "OFFLINE");

    // The dead worker, coming back, finds its jobs gone and cannot overwrite them.
    let e = dead
        .append_logs(&running.job.id, &chunk("late"))
        .await
        .unwrap_err();
    assert!(e.is_job_gone(), "{e}");
    let e = dead
        .finish(&running.job.id, &JobOutcome::success(serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(e.is_job_gone(), "{e}");
    assert_eq!(status(&c, &deploy).await, "FAILED");
    // The requeued PLAN is claimable again, with its attempt counted.
    let again = live.claim().await.unwrap().unwrap();
    assert_eq!(again.job.id.0, plan);
    let attempts: i32 = c
        .query_one(
            "SELECT attempts FROM provision_jobs WHERE id = $1::text::uuid",
            &[&plan],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_its_id_gives_up_the_job_its_previous_process_ran() {
    let (url, c) = db().await;
    let before = open(&url, "same").await;
    let v = vine(&c).await;
    let deploy = job(&c, &v, "DEPLOY").await;
    let running = before.claim().await.unwrap().unwrap();
    assert_eq!(running.job.id.0, deploy);
    before.start(&running.job.id).await.unwrap();
    // claimed long ago; the worker still runs it and says so in its heartbeat
    c.execute(
        "UPDATE provision_jobs SET claimed_at = now() - interval '2 minutes' WHERE id = $1::text::uuid",
        &[&deploy],
    )
    .await
    .unwrap();
    before
        .heartbeat(WorkerState::Online, Some(&running.job.id))
        .await
        .unwrap();
    let none = before
        .recover_stale(Duration::from_secs(60), Duration::from_secs(300))
        .await
        .unwrap();
    assert!(none.is_empty(), "a live worker's job was taken: {none:?}");
    assert_eq!(status(&c, &deploy).await, "PROCESSING");

    // The process dies and its supervisor starts it again under the same id:
    // its heartbeats are fresh, but name no job.
    drop(before);
    let after = open(&url, "same").await;
    after.heartbeat(WorkerState::Online, None).await.unwrap();
    let rec = after
        .recover_stale(Duration::from_secs(60), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0].job.0, deploy);
    assert_eq!(rec[0].action, "FAILED");
    let (st, err): (String, String) = c
        .query_one(
            "SELECT status, error_message FROM provision_jobs WHERE id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(st, "FAILED");
    assert!(
        err.contains("restarted") && err.contains("re-plan"),
        "{err}"
    );
    // and the vine is free for the next job
    let next = job(&c, &v, "PLAN").await;
    assert_eq!(after.claim().await.unwrap().unwrap().job.id.0, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_requests_are_seen_and_keep_the_vine_locked() {
    let (url, c) = db().await;
    let w = open(&url, "w").await;
    let other = open(&url, "other").await;
    let v = vine(&c).await;
    let running = job(&c, &v, "PLAN").await;
    let next = job(&c, &v, "PLAN").await;
    let j = w.claim().await.unwrap().unwrap();
    w.start(&j.job.id).await.unwrap();
    assert_eq!(w.check(&j.job.id).await.unwrap(), JobCheck::Running);
    let s: Option<String> = c
        .query_one("SELECT request_job_cancel($1::text::uuid)", &[&running])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s.as_deref(), Some("PROCESSING"));
    assert_eq!(w.check(&j.job.id).await.unwrap(), JobCheck::CancelRequested);
    // Until the worker reports, the vine stays locked.
    assert!(other.claim().await.unwrap().is_none());
    w.finish(
        &j.job.id,
        &JobOutcome::cancelled("cancelled by the control plane"),
    )
    .await
    .unwrap();
    assert_eq!(status(&c, &running).await, "CANCELLED");
    // A QUEUED job is cancelled at once.
    let s: Option<String> = c
        .query_one("SELECT request_job_cancel($1::text::uuid)", &[&next])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s.as_deref(), Some("CANCELLED"));
    assert!(other.claim().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_is_safe_to_retry_and_heartbeats_record_state() {
    let (url, c) = db().await;
    let w = open(&url, "w").await;
    let v = vine(&c).await;
    let id = job(&c, &v, "PLAN").await;
    let j = w.claim().await.unwrap().unwrap();
    w.heartbeat(WorkerState::Online, Some(&j.job.id))
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT status, current_job_id::text FROM workers WHERE id = 'w'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ONLINE");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some(id.as_str())
    );
    w.start(&j.job.id).await.unwrap();
    let outcome = JobOutcome::failed("terraform exited 1");
    w.finish(&j.job.id, &outcome).await.unwrap();
    // A retry after a lost reply succeeds without changing anything.
    w.finish(&j.job.id, &outcome).await.unwrap();
    // A different result for the same job is refused.
    let e = w
        .finish(&j.job.id, &JobOutcome::success(serde_json::Value::Null))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::JobGone { .. }), "{e}");
    let row = c
        .query_one(
            "SELECT status, error_message, completed_at IS NOT NULL FROM provision_jobs WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "FAILED");
    assert_eq!(row.get::<_, String>(1), "terraform exited 1");
    assert!(row.get::<_, bool>(2));
    w.heartbeat(WorkerState::Draining, None).await.unwrap();
    w.go_offline().await.unwrap();
    let row = c
        .query_one(
            "SELECT status, current_job_id IS NULL FROM workers WHERE id = 'w'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "OFFLINE");
    assert!(row.get::<_, bool>(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_tokens_are_stored_as_sha256_and_verifiable() {
    let (url, c) = db().await;
    let token = Secret::new("s3cret-token".to_string());
    PgQueue::open(Secret::new(url.clone()), "tok", Some(&token))
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT token_hash, worker_token_valid('tok', 's3cret-token'), worker_token_valid('tok', 'wrong')
             FROM workers WHERE id = 'tok'",
            &[],
        )
        .await
        .unwrap();
    let hash: String = row.get(0);
    assert_eq!(hash, tendril::queue::postgres::token_hash(&token));
    assert_eq!(hash.len(), 64);
    assert!(!hash.contains("s3cret"));
    assert!(row.get::<_, bool>(1));
    assert!(!row.get::<_, bool>(2));
}

#[tokio::test]
async fn a_bad_database_url_names_the_flag() {
    let e = PgQueue::open(Secret::new("not a url at all=".into()), "w", None)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("--database-url"), "{e}");
    let e = PgQueue::open(
        Secret::new("postgres://postgres@127.0.0.1:1/x".into()),
        "w",
        None,
    )
    .await
    .err()
    .unwrap();
    assert!(
        e.is_transient(),
        "a refused connection is worth retrying: {e}"
    );
}

/// Worker A has claimed a vine's job but not committed yet; worker B, looking
/// at the same vine's other job at that moment, must skip it (not take it, not
/// block, not fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_uncommitted_claim_makes_others_skip_the_vine() {
    let (url, c) = db().await;
    let _ = open(&url, "a").await;
    let b = open(&url, "b").await;
    let v = vine(&c).await;
    let first = job(&c, &v, "PLAN").await;
    let second = job(&c, &v, "PLAN").await;

    let (mut a_conn, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let tx = a_conn.transaction().await.unwrap();
    let got: String = tx
        .query_one("SELECT id::text FROM claim_next_job('a')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, first);
    // A's claim is not committed: B sees `second` QUEUED and no active job of the vine.
    let claimed = tokio::time::timeout(Duration::from_secs(30), b.claim())
        .await
        .expect("claim must not block on the other worker's transaction")
        .unwrap();
    assert!(
        claimed.is_none(),
        "worker b took {claimed:?} while a held the vine"
    );
    tx.commit().await.unwrap();
    assert!(
        b.claim().await.unwrap().is_none(),
        "the vine is busy once a's claim is committed"
    );
    assert_eq!(status(&c, &second).await, "QUEUED");
}

/// The tightest interleaving: A and B have each locked a different QUEUED job
/// of one vine (both saw no active job), then both try to claim. Row locks
/// cannot separate them; the per-vine advisory lock must: B gives up at once
/// instead of claiming (or blocking on the unique index until A commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_inside_the_claim_at_once_claim_one_job_of_the_vine() {
    let (url, c) = db().await;
    let _ = open(&url, "a").await;
    let _ = open(&url, "b").await;
    let v = vine(&c).await;
    let first = job(&c, &v, "PLAN").await;
    let second = job(&c, &v, "PLAN").await;
    let (mut a_conn, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let (mut b_conn, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let a = a_conn.transaction().await.unwrap();
    let b = b_conn.transaction().await.unwrap();
    let lock = "SELECT id FROM provision_jobs WHERE id = $1::text::uuid AND status = 'QUEUED' FOR UPDATE SKIP LOCKED";
    assert_eq!(a.query(lock, &[&first]).await.unwrap().len(), 1);
    assert_eq!(b.query(lock, &[&second]).await.unwrap().len(), 1);
    let try_claim = "SELECT (tendril_try_claim(p, $2)).id::text FROM provision_jobs p WHERE p.id = $1::text::uuid";
    let got_a: Option<String> = a
        .query_one(try_claim, &[&first, &"a"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(got_a.as_deref(), Some(first.as_str()));
    let got_b = tokio::time::timeout(
        Duration::from_secs(30),
        b.query_one(try_claim, &[&second, &"b"]),
    )
    .await
    .expect("the second claim must not wait for the first transaction")
    .unwrap();
    assert_eq!(
        got_b.get::<_, Option<String>>(0),
        None,
        "two jobs of one vine were claimed"
    );
    b.commit().await.unwrap();
    a.commit().await.unwrap();
    assert_eq!(status(&c, &first).await, "CLAIMED");
    assert_eq!(status(&c, &second).await, "QUEUED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_job_of_a_vine_goes_first_even_while_another_claimer_holds_it() {
    let (url, c) = db().await;
    let q = open(&url, "b").await;
    let v = vine(&c).await;
    let older = job(&c, &v, "PLAN").await;
    let newer = job(&c, &v, "PLAN").await;
    // Another claimer is inside its claim, holding the older job's row.
    let (holder, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .query_one(
            "SELECT id FROM provision_jobs WHERE id = $1::text::uuid FOR UPDATE",
            &[&older],
        )
        .await
        .unwrap();
    let row = c
        .query_opt("SELECT id::text FROM claim_next_job('b')", &[])
        .await
        .unwrap();
    assert_eq!(
        row.map(|r| r.get::<_, String>(0)),
        None,
        "the newer job {newer} was claimed while the older one waited"
    );
    // The holder lets go (it took another vine's job): the same claim, through
    // the queue, retries at once instead of coming back empty.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        holder.batch_execute("ROLLBACK").await.unwrap();
        holder
    });
    let claimed = q.claim().await.unwrap().expect("a claimable job waited");
    assert_eq!(claimed.job.id.0, older);
    drop(release.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_at_claim_is_logged_and_its_vine_finalized() {
    let (url, c) = db().await;
    let q = open(&url, "w").await;
    let v = vine(&c).await;
    let deploy = job(&c, &v, "DEPLOY").await;
    c.execute(
        "UPDATE provision_jobs SET cloud_identity = '{\"provider\": 7}' WHERE id = $1::text::uuid",
        &[&deploy],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE vines SET status = 'PROVISIONING' WHERE id = $1::text::uuid",
        &[&v],
    )
    .await
    .unwrap();
    assert!(q.claim().await.unwrap().is_none());
    let row = c
        .query_one(
            "SELECT status, error_message, error_phase, finalized_at IS NOT NULL FROM provision_jobs WHERE id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "FAILED");
    let message: String = row.get(1);
    assert!(message.contains("cloud_identity"), "{message}");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("claim"));
    assert!(row.get::<_, bool>(3), "the DEPLOY was not finalized");
    let logs: String = c
        .query_one(
            "SELECT coalesce(string_agg(log_chunk, ''), '') FROM provision_job_logs WHERE job_id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        logs.contains("cannot be run") && logs.contains("cloud_identity"),
        "{logs}"
    );
    let vine_row = c
        .query_one(
            "SELECT status, error_message FROM vines WHERE id = $1::text::uuid",
            &[&v],
        )
        .await
        .unwrap();
    assert_eq!(vine_row.get::<_, String>(0), "FAILED");
    assert_eq!(vine_row.get::<_, Option<String>>(1), Some(message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_plan_sentence_is_the_whole_error_and_the_phase_its_own_column() {
    const STALE: &str = "Configuration has changed since the plan was generated. Please re-plan.";
    let (url, c) = db().await;
    let q = open(&url, "w").await;
    let v = vine(&c).await;
    let deploy = job(&c, &v, "DEPLOY").await;
    let claimed = q.claim().await.unwrap().unwrap();
    assert_eq!(claimed.job.id.0, deploy);
    q.start(&claimed.job.id).await.unwrap();
    q.finish(
        &claimed.job.id,
        &JobOutcome::failed(STALE).in_phase(Some("config_hash".into())),
    )
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT j.error_message, j.error_phase, v.error_message FROM provision_jobs j
             JOIN vines v ON v.id = j.vine_id WHERE j.id = $1::text::uuid",
            &[&deploy],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(STALE));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("config_hash")
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(STALE));
}
