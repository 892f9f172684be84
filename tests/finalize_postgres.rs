//! Finalization against a real PostgreSQL: what it writes, idempotency, and
//! atomicity under a failure injected midway.

use std::process::Command;
use tendril::Secret;
use tendril::queue::postgres::PgQueue;
use tendril::queue::{JobOutcome, finalize};
use tendril_testkit::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

async fn db() -> (String, Client) {
    let url = Postgres::shared().fresh_database().await;
    let mut q = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .unwrap();
    tendril::queue::postgres::migrate(&mut q).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    (url, client)
}

const SNAPSHOT: &str = r#"{"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "local"}"#;

/// A vine with one database and one cache row, and a DEPLOY job for it.
async fn deploy_job(c: &Client) -> (String, String) {
    let vine: String = c
        .query_one(
            "INSERT INTO vines (vineyard_id, name, status) VALUES (gen_random_uuid(), 'shop', 'PROVISIONING') RETURNING id::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "INSERT INTO vine_databases (vine_id, name, engine) VALUES ($1::text::uuid, 'orders', 'aurora-postgresql')",
        &[&vine],
    )
    .await
    .unwrap();
    let job: String = c
        .query_one(
            "WITH p AS (INSERT INTO provision_jobs (job_type, status, vine_id, vineyard_id, config_snapshot)
                        SELECT 'PLAN', 'SUCCESS', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid
                        RETURNING id, vine_id, vineyard_id)
             INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot, plan_job_id)
             SELECT 'DEPLOY', vine_id, vineyard_id, $2::text::jsonb, id FROM p RETURNING id::text",
            &[&vine, &SNAPSHOT],
        )
        .await
        .unwrap()
        .get(0);
    (vine, job)
}

fn metadata() -> serde_json::Value {
    serde_json::json!({
        "cluster_name": "shop-prod",
        "cluster_endpoint": "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
        "cluster_arn": "arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod",
        "argocd_url": "https://argocd.shop.example.com",
        "argocd_admin_password": "pw-123",
        "databases": [{"name": "orders", "writer_endpoint": "w.orders", "reader_endpoint": "r.orders",
                       "credentials_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders"}],
        "caches": [{"name": "sessions", "primary_endpoint": "p.sessions", "reader_endpoint": "r.sessions"}],
        "outputs": {}, "change_summary": {"add": 1, "change": 0, "remove": 0}, "timings_ms": {}
    })
}

/// Everything finalization writes, as text, without timestamps.
async fn dump(c: &Client, vine: &str) -> String {
    let mut out = String::new();
    for q in [
        "SELECT status || '|' || coalesce(error_message, '') || '|' || coalesce(last_deploy_job_id::text, '') FROM vines WHERE id = $1::text::uuid",
        "SELECT concat_ws('|', cluster_name, cluster_endpoint, cluster_arn, argocd_url, argocd_admin_password, job_id) FROM vine_cluster WHERE vine_id = $1::text::uuid",
        "SELECT concat_ws('|', name, engine, writer_endpoint, reader_endpoint, credentials_secret_arn) FROM vine_databases WHERE vine_id = $1::text::uuid ORDER BY name",
        "SELECT concat_ws('|', name, primary_endpoint, reader_endpoint) FROM vine_caches WHERE vine_id = $1::text::uuid ORDER BY name",
    ] {
        for r in c.query(q, &[&vine]).await.unwrap() {
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

async fn run_to(q: &PgQueue, job: &str) {
    let claimed = q.claim().await.unwrap().unwrap();
    assert_eq!(claimed.job.id.0, job);
    q.start(&claimed.job.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_deploy_fills_the_platform_tables_and_is_idempotent() {
    let (url, c) = db().await;
    let (vine, job) = deploy_job(&c).await;
    let q = PgQueue::open(Secret::new(url.clone()), "w", None)
        .await
        .unwrap();
    run_to(&q, &job).await;
    q.finish(
        &tendril::job::JobId(job.clone()),
        &JobOutcome::success(metadata()),
    )
    .await
    .unwrap();
    let first = dump(&c, &vine).await;
    assert_eq!(
        first,
        format!(
            "ACTIVE||{job}\n--\nshop-prod|https://ABC.gr7.eu-west-1.eks.amazonaws.com|arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod|https://argocd.shop.example.com|pw-123|{job}\n--\n\
             orders|aurora-postgresql|w.orders|r.orders|arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders\n--\n\
             sessions|p.sessions|r.sessions\n--\n"
        )
    );
    // Running it again (the CLI path) changes nothing.
    let mut own = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .unwrap();
    let again = finalize::finalize_job(&mut own, &job).await.unwrap();
    assert_eq!(again.vine_status, "ACTIVE");
    assert_eq!((again.databases, again.caches), (1, 1));
    assert_eq!(dump(&c, &vine).await, first);
    let finalized: bool = c
        .query_one(
            "SELECT finalized_at IS NOT NULL FROM provision_jobs WHERE id = $1::text::uuid",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert!(finalized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_marks_the_vine_failed_with_the_error() {
    let (url, c) = db().await;
    let (vine, job) = deploy_job(&c).await;
    let q = PgQueue::open(Secret::new(url), "w", None).await.unwrap();
    run_to(&q, &job).await;
    q.finish(
        &tendril::job::JobId(job.clone()),
        &JobOutcome::failed("terraform apply: Error creating EKS cluster"),
    )
    .await
    .unwrap();
    assert_eq!(
        dump(&c, &vine).await,
        format!(
            "FAILED|terraform apply: Error creating EKS cluster|{job}\n--\n--\norders|aurora-postgresql\n--\n--\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_midway_writes_nothing_and_a_retry_completes() {
    let (url, c) = db().await;
    let (vine, job) = deploy_job(&c).await;
    let before = dump(&c, &vine).await;
    // Inject a failure after vine_cluster and vine_databases have been written.
    c.batch_execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON vine_caches FOR EACH ROW EXECUTE FUNCTION boom();",
    )
    .await
    .unwrap();
    let q = PgQueue::open(Secret::new(url.clone()), "w", None)
        .await
        .unwrap();
    run_to(&q, &job).await;
    let id = tendril::job::JobId(job.clone());
    let e = q
        .finish(&id, &JobOutcome::success(metadata()))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("injected failure"), "{e:?}");
    assert!(!e.to_string().contains("pw-123"), "{e}");
    // Nothing half-written: not the platform tables, not the job's status.
    assert_eq!(dump(&c, &vine).await, before);
    let row = c
        .query_one(
            "SELECT status, finalized_at IS NULL FROM provision_jobs WHERE id = $1::text::uuid",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "PROCESSING");
    assert!(row.get::<_, bool>(1));

    c.batch_execute("DROP TRIGGER boom ON vine_caches")
        .await
        .unwrap();
    q.finish(&id, &JobOutcome::success(metadata()))
        .await
        .unwrap();
    let after = dump(&c, &vine).await;
    assert!(after.starts_with(&format!("ACTIVE||{job}\n")), "{after}");
    assert!(after.contains("sessions|p.sessions|r.sessions"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalize_command_finalizes_and_explains_bad_input() {
    let (url, c) = db().await;
    let (vine, job) = deploy_job(&c).await;
    let bin = env!("CARGO_BIN_EXE_tendril");
    // Not finished yet: refused, nothing written.
    let out = Command::new(bin)
        .args(["finalize", "--database-url", &url, "--job", &job])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is QUEUED") && err.contains("once the job has finished"),
        "{err}"
    );

    c.execute(
        "UPDATE provision_jobs SET status = 'SUCCESS', completed_at = now(), execution_metadata = $2 WHERE id = $1::text::uuid",
        &[&job, &metadata()],
    )
    .await
    .unwrap();
    let out = Command::new(bin)
        .args(["finalize", "--database-url", &url, "--job", &job])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ACTIVE"), "{err}");
    assert!(!err.contains("pw-123"), "{err}");
    assert!(dump(&c, &vine).await.starts_with("ACTIVE"));

    for (id, expect) in [
        ("not-a-uuid", "is not a job id"),
        ("3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10", "no such job"),
    ] {
        let out = Command::new(bin)
            .args(["finalize", "--database-url", &url, "--job", id])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(expect), "{err}");
    }
    let plan: String = c
        .query_one(
            "SELECT plan_job_id::text FROM provision_jobs WHERE id = $1::text::uuid",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    let out = Command::new(bin)
        .args(["finalize", "--database-url", &url, "--job", &plan])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only DEPLOY and DESTROY jobs are finalized")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_deploy_never_overwrites_a_newer_one() {
    let (url, c) = db().await;
    let (vine, old) = deploy_job(&c).await;
    let new: String = c
        .query_one(
            "INSERT INTO provision_jobs (job_type, status, vine_id, vineyard_id, config_snapshot, plan_job_id, completed_at, execution_metadata)
             SELECT 'DEPLOY', 'SUCCESS', vine_id, vineyard_id, config_snapshot, plan_job_id, now(), $2
             FROM provision_jobs WHERE id = $1::text::uuid RETURNING id::text",
            &[&old, &metadata()],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE provision_jobs SET status = 'FAILED', error_message = 'old', completed_at = now() - interval '1 hour' WHERE id = $1::text::uuid",
        &[&old],
    )
    .await
    .unwrap();
    let mut own = tendril::queue::postgres::connect(&Secret::new(url))
        .await
        .unwrap();
    finalize::finalize_job(&mut own, &new).await.unwrap();
    let done = finalize::finalize_job(&mut own, &old).await.unwrap();
    assert!(done.superseded);
    assert!(dump(&c, &vine).await.starts_with(&format!("ACTIVE||{new}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_without_usable_metadata_is_recorded_failed() {
    let (url, c) = db().await;
    let (vine, job) = deploy_job(&c).await;
    let q = PgQueue::open(Secret::new(url), "w", None).await.unwrap();
    run_to(&q, &job).await;
    q.finish(
        &tendril::job::JobId(job.clone()),
        &JobOutcome::success(serde_json::Value::Null),
    )
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT j.status, j.error_message, v.status FROM provision_jobs j JOIN vines v ON v.id = j.vine_id
             WHERE j.id = $1::text::uuid",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "FAILED");
    assert!(
        row.get::<_, String>(1)
            .contains("has no execution_metadata")
    );
    assert_eq!(row.get::<_, String>(2), "FAILED");
    assert!(
        dump(&c, &vine)
            .await
            .starts_with("FAILED|the DEPLOY succeeded but")
    );
}

/// A DESTROY job of the vine `deploy_job` made, queued after it.
async fn destroy_job(c: &Client, vine: &str) -> String {
    c.query_one(
        "INSERT INTO provision_jobs (job_type, vine_id, vineyard_id, config_snapshot)
         SELECT 'DESTROY', id, vineyard_id, $2::text::jsonb FROM vines WHERE id = $1::text::uuid
         RETURNING id::text",
        &[&vine, &SNAPSHOT],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_destroy_marks_the_vine_destroyed_and_clears_its_resources() {
    let (url, c) = db().await;
    let (vine, deploy) = deploy_job(&c).await;
    let q = PgQueue::open(Secret::new(url.clone()), "w", None)
        .await
        .unwrap();
    run_to(&q, &deploy).await;
    q.finish(
        &tendril::job::JobId(deploy.clone()),
        &JobOutcome::success(metadata()),
    )
    .await
    .unwrap();
    assert!(dump(&c, &vine).await.starts_with("ACTIVE"));

    // a failed DESTROY leaves the records and says why
    let failed = destroy_job(&c, &vine).await;
    run_to(&q, &failed).await;
    q.finish(
        &tendril::job::JobId(failed.clone()),
        &JobOutcome::failed("terraform destroy failed on terraform_data.guard"),
    )
    .await
    .unwrap();
    let after_failure = dump(&c, &vine).await;
    assert!(
        after_failure.starts_with(&format!(
            "FAILED|terraform destroy failed on terraform_data.guard|{failed}\n"
        )),
        "{after_failure}"
    );
    assert!(after_failure.contains("shop-prod|"), "{after_failure}");

    // the DESTROY run again succeeds: DESTROYED, no cluster/database/cache rows
    let second = destroy_job(&c, &vine).await;
    run_to(&q, &second).await;
    q.finish(
        &tendril::job::JobId(second.clone()),
        &JobOutcome::success(
            serde_json::json!({"change_summary": {"add": 0, "change": 0, "remove": 4}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        dump(&c, &vine).await,
        format!("DESTROYED||{second}\n--\n--\n--\n--\n")
    );
    // finalizing it again changes nothing
    let mut own = tendril::queue::postgres::connect(&Secret::new(url.clone()))
        .await
        .unwrap();
    let again = finalize::finalize_job(&mut own, &second).await.unwrap();
    assert_eq!(again.vine_status, "DESTROYED");
    assert_eq!(
        dump(&c, &vine).await,
        format!("DESTROYED||{second}\n--\n--\n--\n--\n")
    );
}
