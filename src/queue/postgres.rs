//! The PostgreSQL job queue, for self-hosted use without Trellis.
//!
//! The schema lives in `migrations/*.sql` (embedded in the binary) and is
//! applied by [`migrate`]: once per database, in a transaction, under an
//! advisory lock, so several workers starting at once are safe.
//!
//! Claiming is one statement, `SELECT ... FROM claim_next_job($worker)`: the
//! SQL function takes the oldest QUEUED job with `FOR UPDATE SKIP LOCKED`,
//! prefers jobs assigned to this worker, and never takes a job for a vine that
//! already has a CLAIMED or PROCESSING job (a per-vine advisory lock closes the
//! race between two workers claiming two jobs of one vine; a partial unique
//! index backs the rule up).
//!
//! Every method is one attempt; errors say whether to retry
//! ([`QueueError::is_transient`]). A lost connection is re-opened on the next call.

use super::{ClaimedJob, JobOutcome, JobState, LogChunk, QueueError, WorkerState};
use crate::Secret;
use crate::job::{CloudIdentity, Job, JobId, JobType};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_platform",
        include_str!("../../migrations/0001_platform.sql"),
    ),
    (
        2,
        "0002_worker_contract",
        include_str!("../../migrations/0002_worker_contract.sql"),
    ),
    (
        3,
        "0003_worker_restart",
        include_str!("../../migrations/0003_worker_restart.sql"),
    ),
    (
        4,
        "0004_destroy_jobs",
        include_str!("../../migrations/0004_destroy_jobs.sql"),
    ),
];

/// How often an empty claim is tried again at once while claimable jobs wait
/// (they were held by concurrent claimers): about 1.3 s in all.
const CLAIM_RETRIES: u32 = 16;

/// The pause before retry `attempt` of an empty claim: 5 ms, doubling, at most 100 ms.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(5u64.saturating_mul(1 << attempt.min(5)).min(100))
}

/// Applies the migrations this database has not seen yet.
pub async fn migrate(client: &mut Client) -> Result<(), QueueError> {
    let tx = client
        .transaction()
        .await
        .map_err(QueueError::db("start the migration transaction"))?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tendril.migrations', 0));
         CREATE TABLE IF NOT EXISTS tendril_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(QueueError::db("create the tendril_migrations table"))?;
    for (version, name, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM tendril_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(QueueError::db("read tendril_migrations"))?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(QueueError::db(format!("apply migration {name}")))?;
        tx.execute(
            "INSERT INTO tendril_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(QueueError::db(format!("record migration {name}")))?;
    }
    tx.commit()
        .await
        .map_err(QueueError::db("commit the migrations"))
}

/// Opens one connection, with TLS as the URL's `sslmode` and `sslrootcert`
/// say (see [`super::tls`]), and drives it on the current tokio runtime.
pub async fn connect(url: &Secret<String>) -> Result<Client, QueueError> {
    let target = super::tls::parse(url.expose())?;
    super::tls::connect(&target).await
}

/// The SHA-256 hex digest stored in `workers.token_hash`.
pub fn token_hash(token: &Secret<String>) -> String {
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// A worker's handle on the PostgreSQL queue.
pub struct PgQueue {
    url: Secret<String>,
    worker_id: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// A second connection for transactions (finish, finalize): the shared
    /// one carries heartbeats and logs from other tasks at the same time.
    tx_client: tokio::sync::Mutex<Option<Client>>,
}

/// What stale-job recovery did to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The job.
    pub job: JobId,
    /// `REQUEUED`, `FAILED` or `CANCELLED`.
    pub action: String,
}

/// What a worker learns when it checks on its running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCheck {
    /// Still this worker's, keep going.
    Running,
    /// Cancellation was requested: stop the run and report CANCELLED.
    CancelRequested,
}

const CLAIM_COLUMNS: &str = "id::text, job_type, vine_id::text, vineyard_id::text, plan_job_id::text, \
     config_snapshot, config_hash, cloud_identity";

impl PgQueue {
    /// Connects, applies the migrations, and registers the worker (status
    /// ONLINE; with a token, its SHA-256 goes into `workers.token_hash`).
    pub async fn open(
        url: Secret<String>,
        worker_id: &str,
        token: Option<&Secret<String>>,
    ) -> Result<PgQueue, QueueError> {
        if worker_id.trim().is_empty() {
            return Err(QueueError::Invalid {
                what: "worker id".into(),
                message: "is empty; give --worker-id or GRAPE_WORKER_ID".into(),
            });
        }
        let mut client = connect(&url).await?;
        migrate(&mut client).await?;
        let hash = token.map(token_hash);
        client
            .execute(
                "INSERT INTO workers (id, name, status, token_hash, last_heartbeat)
                 VALUES ($1, $1, 'ONLINE', $2, now())
                 ON CONFLICT (id) DO UPDATE
                   SET status = 'ONLINE', last_heartbeat = now(),
                       token_hash = coalesce(excluded.token_hash, workers.token_hash)",
                &[&worker_id, &hash],
            )
            .await
            .map_err(QueueError::db(format!("register worker {worker_id}")))?;
        Ok(PgQueue {
            url,
            worker_id: worker_id.to_string(),
            client: tokio::sync::Mutex::new(Some(Arc::new(client))),
            tx_client: tokio::sync::Mutex::new(None),
        })
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    async fn client(&self) -> Result<Arc<Client>, QueueError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(connect(&self.url).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Claims the next job for this worker, or `None` when there is none it may take.
    ///
    /// A claim that comes back empty while claimable jobs wait (concurrent
    /// claimers held them) is tried again at once. A claimed job whose
    /// `cloud_identity` or fields cannot be read is marked FAILED with the
    /// reason and a SYSTEM log line, a DEPLOY is finalized (vine FAILED), and
    /// the next one is tried.
    pub async fn claim(&self) -> Result<Option<ClaimedJob>, QueueError> {
        let client = self.client().await?;
        for attempt in 0..CLAIM_RETRIES {
            let row = client
                .query_opt(
                    &format!("SELECT {CLAIM_COLUMNS} FROM claim_next_job($1)"),
                    &[&self.worker_id],
                )
                .await
                .map_err(QueueError::db("claim_next_job"))?;
            let Some(row) = row else {
                let waiting: bool = client
                    .query_one("SELECT tendril_claimable_exists($1)", &[&self.worker_id])
                    .await
                    .map_err(QueueError::db("tendril_claimable_exists"))?
                    .get(0);
                if !waiting {
                    return Ok(None);
                }
                tokio::time::sleep(retry_delay(attempt)).await;
                continue;
            };
            let id: String = row.get(0);
            match claimed_from_row(&row) {
                Ok(job) => return Ok(Some(job)),
                Err(message) => self.fail_unrunnable(&id, &message).await?,
            }
        }
        Ok(None)
    }

    /// Fails a claimed job that cannot be run: FAILED with the reason, a
    /// SYSTEM log line saying it, and (a DEPLOY) its vine finalized.
    async fn fail_unrunnable(&self, id: &str, message: &str) -> Result<(), QueueError> {
        let mut slot = self.tx_client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(connect(&self.url).await?);
        }
        let Some(own) = slot.as_mut() else {
            return Err(QueueError::Invalid {
                what: "fail an unrunnable job".into(),
                message: "no database connection".into(),
            });
        };
        let tx = own
            .transaction()
            .await
            .map_err(QueueError::db(format!("begin failing job {id}")))?;
        let row = tx
            .query_one(
                "UPDATE provision_jobs
                    SET status = 'FAILED', completed_at = now(), last_activity_at = now(),
                        error_message = $2, error_phase = 'claim'
                  WHERE id = $1::text::uuid
                  RETURNING job_type",
                &[&id, &message],
            )
            .await
            .map_err(QueueError::db(format!("fail unrunnable job {id}")))?;
        tx.execute(
            "INSERT INTO provision_job_logs (job_id, stream_type, log_chunk)
             VALUES ($1::text::uuid, 'SYSTEM', $2)",
            &[&id, &format!("job {id} cannot be run: {message}\n")],
        )
        .await
        .map_err(QueueError::db(format!("log the failure of job {id}")))?;
        if super::finalize::is_finalized(&row.get::<_, String>(0)) {
            super::finalize::finalize_on(&tx, id).await?;
        }
        tx.commit()
            .await
            .map_err(QueueError::db(format!("commit the failure of job {id}")))?;
        tracing::warn!("job {id} cannot be run and was marked FAILED: {message}");
        Ok(())
    }

    /// Marks a claimed job PROCESSING. [`QueueError::JobGone`] when it is no
    /// longer this worker's.
    pub async fn start(&self, job: &JobId) -> Result<(), QueueError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE provision_jobs SET status = 'PROCESSING', started_at = coalesce(started_at, now()),
                        last_activity_at = now()
                 WHERE id = $1::text::uuid AND worker_id = $2 AND status IN ('CLAIMED', 'PROCESSING')
                   AND cancel_requested_at IS NULL",
                &[&job.0, &self.worker_id],
            )
            .await
            .map_err(QueueError::db(format!("mark job {job} PROCESSING")))?;
        if n == 0 {
            return Err(self.gone(job).await);
        }
        Ok(())
    }

    async fn gone(&self, job: &JobId) -> QueueError {
        let reason = match self.client().await {
            Ok(c) => match c
                .query_opt(
                    "SELECT status, worker_id, cancel_requested_at IS NOT NULL FROM provision_jobs WHERE id = $1::text::uuid",
                    &[&job.0],
                )
                .await
            {
                Ok(Some(r)) => {
                    let status: String = r.get(0);
                    let worker: Option<String> = r.get(1);
                    let cancel: bool = r.get(2);
                    if cancel {
                        "cancellation was requested".to_string()
                    } else if worker.as_deref() != Some(self.worker_id.as_str()) {
                        format!(
                            "it is {status} and no longer held by this worker (stale-job recovery took it back)"
                        )
                    } else {
                        format!("it is already {status}")
                    }
                }
                Ok(None) => "it no longer exists".to_string(),
                Err(e) => format!("it could not be checked ({e})"),
            },
            Err(e) => format!("it could not be checked ({e})"),
        };
        QueueError::JobGone {
            job: job.clone(),
            reason,
        }
    }

    /// Appends a log chunk and records activity on the job.
    pub async fn append_logs(&self, job: &JobId, chunk: &LogChunk) -> Result<(), QueueError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "WITH j AS (
                     UPDATE provision_jobs SET last_activity_at = now()
                     WHERE id = $1::text::uuid AND worker_id = $2 AND status IN ('CLAIMED', 'PROCESSING')
                     RETURNING id)
                 INSERT INTO provision_job_logs (job_id, stream_type, log_chunk)
                 SELECT id, $3, $4 FROM j",
                &[&job.0, &self.worker_id, &chunk.stream_type.as_str(), &chunk.log_chunk],
            )
            .await
            .map_err(QueueError::db(format!("append logs of job {job}")))?;
        if n == 0 {
            return Err(self.gone(job).await);
        }
        Ok(())
    }

    /// Checks whether the running job is still this worker's and whether its
    /// cancellation was requested.
    pub async fn check(&self, job: &JobId) -> Result<JobCheck, QueueError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT status, worker_id, cancel_requested_at IS NOT NULL FROM provision_jobs WHERE id = $1::text::uuid",
                &[&job.0],
            )
            .await
            .map_err(QueueError::db(format!("check job {job}")))?;
        let Some(row) = row else {
            return Err(QueueError::JobGone {
                job: job.clone(),
                reason: "it no longer exists".into(),
            });
        };
        let status: String = row.get(0);
        let worker: Option<String> = row.get(1);
        let cancel: bool = row.get(2);
        if worker.as_deref() != Some(self.worker_id.as_str())
            || !matches!(status.as_str(), "CLAIMED" | "PROCESSING")
        {
            return Err(QueueError::JobGone {
                job: job.clone(),
                reason: format!("it is {status} and no longer held by this worker"),
            });
        }
        Ok(if cancel {
            JobCheck::CancelRequested
        } else {
            JobCheck::Running
        })
    }

    /// Records the final status; for a DEPLOY job, finalization runs in the
    /// same transaction (see [`super::finalize`]). Safe to retry: a second
    /// call after a lost reply finds the job already finished by this worker
    /// and succeeds.
    ///
    /// A SUCCESS whose results cannot be finalized (no or malformed
    /// `execution_metadata`) is recorded as FAILED with the reason, and the vine
    /// becomes FAILED: the job must not look done when the platform's records
    /// are not.
    pub async fn finish(&self, job: &JobId, outcome: &JobOutcome) -> Result<(), QueueError> {
        match self.finish_once(job, outcome).await {
            Err(QueueError::Finalize { message, .. })
                if outcome.status == crate::job::JobStatus::Success =>
            {
                let failed = JobOutcome {
                    status: crate::job::JobStatus::Failed,
                    error_message: Some(format!(
                        "the DEPLOY succeeded but its results could not be finalized: {message}"
                    )),
                    error_phase: Some("finalize".into()),
                    execution_metadata: outcome.execution_metadata.clone(),
                };
                self.finish_once(job, &failed).await
            }
            other => other,
        }
    }

    async fn finish_once(&self, job: &JobId, outcome: &JobOutcome) -> Result<(), QueueError> {
        let mut slot = self.tx_client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(connect(&self.url).await?);
        }
        let Some(own) = slot.as_mut() else {
            return Err(QueueError::Invalid {
                what: "finish".into(),
                message: "no database connection".into(),
            });
        };
        let metadata =
            (!outcome.execution_metadata.is_null()).then_some(&outcome.execution_metadata);
        let status = JobState::from(outcome.status).as_str();
        let tx = own
            .transaction()
            .await
            .map_err(QueueError::db(format!("begin finishing job {job}")))?;
        let row = tx
            .query_opt(
                "UPDATE provision_jobs
                    SET status = $3, error_message = $4, execution_metadata = $5,
                        error_phase = $6, completed_at = now(), last_activity_at = now()
                  WHERE id = $1::text::uuid AND worker_id = $2 AND status IN ('CLAIMED', 'PROCESSING')
                  RETURNING job_type",
                &[&job.0, &self.worker_id, &status, &outcome.error_message, &metadata, &outcome.error_phase],
            )
            .await
            .map_err(QueueError::db(format!("record the result of job {job}")))?;
        let Some(row) = row else {
            drop(tx);
            // Already finished by this worker (a retry after a lost reply)?
            let row = own
                .query_opt(
                    "SELECT worker_id, completed_at IS NOT NULL, status FROM provision_jobs WHERE id = $1::text::uuid",
                    &[&job.0],
                )
                .await
                .map_err(QueueError::db(format!("check job {job}")))?;
            return match row {
                Some(r)
                    if r.get::<_, Option<String>>(0).as_deref()
                        == Some(self.worker_id.as_str())
                        && r.get::<_, bool>(1)
                        && r.get::<_, String>(2) == status =>
                {
                    Ok(())
                }
                _ => Err(self.gone(job).await),
            };
        };
        let job_type: String = row.get(0);
        tx.execute(
            "UPDATE workers SET current_job_id = NULL WHERE id = $1 AND current_job_id = $2::text::uuid",
            &[&self.worker_id, &job.0],
        )
        .await
        .map_err(QueueError::db("clear the worker's current job"))?;
        if super::finalize::is_finalized(&job_type) {
            super::finalize::finalize_on(&tx, &job.0).await?;
        }
        tx.commit()
            .await
            .map_err(QueueError::db(format!("commit the result of job {job}")))
    }

    /// Records a heartbeat: state and current job.
    pub async fn heartbeat(
        &self,
        state: WorkerState,
        current: Option<&JobId>,
    ) -> Result<(), QueueError> {
        let client = self.client().await?;
        let current = current.map(|j| j.0.clone());
        client
            .execute(
                "INSERT INTO workers (id, name, status, current_job_id, last_heartbeat)
                 VALUES ($1, $1, $2, $3::text::uuid, now())
                 ON CONFLICT (id) DO UPDATE
                   SET status = excluded.status, current_job_id = excluded.current_job_id, last_heartbeat = now()",
                &[&self.worker_id, &state.as_str(), &current],
            )
            .await
            .map_err(QueueError::db(format!("heartbeat of worker {}", self.worker_id)))?;
        Ok(())
    }

    /// Runs stale-job recovery (see `recover_stale_jobs` in the migration and
    /// `docs/worker.md`); DEPLOY jobs it fails are finalized (vine FAILED).
    pub async fn recover_stale(
        &self,
        heartbeat_timeout: Duration,
        silence: Duration,
    ) -> Result<Vec<Recovered>, QueueError> {
        let client = self.client().await?;
        let hb = format!("{} milliseconds", heartbeat_timeout.as_millis());
        let si = format!("{} milliseconds", silence.as_millis());
        let rows = client
            .query(
                "SELECT r.job_id::text, r.action, p.job_type
                   FROM recover_stale_jobs($1::text::interval, $2::text::interval) r
                   JOIN provision_jobs p ON p.id = r.job_id",
                &[&hb, &si],
            )
            .await
            .map_err(QueueError::db("recover_stale_jobs"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let job: String = r.get(0);
            let action: String = r.get(1);
            let job_type: String = r.get(2);
            if super::finalize::is_finalized(&job_type) && action != "REQUEUED" {
                let mut slot = self.tx_client.lock().await;
                if slot.as_ref().is_none_or(|c| c.is_closed()) {
                    *slot = Some(connect(&self.url).await?);
                }
                if let Some(own) = slot.as_mut() {
                    super::finalize::finalize_job(own, &job).await?;
                }
            }
            out.push(Recovered {
                job: JobId(job),
                action,
            });
        }
        Ok(out)
    }

    /// Marks this worker OFFLINE (on exit).
    pub async fn go_offline(&self) -> Result<(), QueueError> {
        self.heartbeat(WorkerState::Offline, None).await
    }
}

fn claimed_from_row(row: &tokio_postgres::Row) -> Result<ClaimedJob, String> {
    let job_type = match row.get::<_, String>(1).as_str() {
        "PLAN" => JobType::Plan,
        "DEPLOY" => JobType::Deploy,
        "DESTROY" => JobType::Destroy,
        other => return Err(format!("unknown job_type {other}")),
    };
    let cloud: serde_json::Value = row.get(7);
    let cloud_identity: CloudIdentity = serde_json::from_value(cloud).map_err(|e| {
        format!("cloud_identity is not a valid identity ({e}); fix the job row and queue it again")
    })?;
    Ok(ClaimedJob {
        job: Job {
            id: JobId(row.get(0)),
            job_type,
            vine_id: row.get(2),
            vineyard_id: row.get(3),
            plan_job_id: row.get::<_, Option<String>>(4).map(JobId),
            config_snapshot: row.get(5),
            config_hash: row.get(6),
        },
        cloud_identity,
    })
}
