//! Finalization: the control plane's `finalizeDeployment()`.
//!
//! When a DEPLOY job has finished, its results go into the platform's tables
//! in one transaction:
//!
//! - SUCCESS: `vine_cluster` (name, endpoint, ARN, Argo CD URL and admin
//!   password), `vine_databases` (writer and reader endpoints, credential
//!   secret ARN), `vine_caches` (primary and reader endpoints), all read from
//!   `provision_jobs.execution_metadata` (see `docs/report.md`), and the vine
//!   becomes `ACTIVE`;
//! - FAILED or CANCELLED: the vine becomes `FAILED` with the job's error.
//!
//! A finished DESTROY job is finalized the same way: on SUCCESS the vine
//! becomes `DESTROYED` and its `vine_cluster`, `vine_databases` and
//! `vine_caches` rows are removed (they name resources that no longer exist);
//! otherwise the vine becomes `FAILED` with the job's error (a DESTROY run
//! again continues from what is left).
//!
//! Rows are upserted by key, so running it twice leaves the same state
//! (idempotent). A vine whose latest finalized DEPLOY finished after this job
//! is left as it is: an old job never overwrites a newer one's results.

use super::QueueError;
use crate::Secret;
use serde::Deserialize;
use tokio_postgres::{Client, GenericClient};

/// What finalization did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalized {
    /// The job.
    pub job_id: String,
    /// The vine.
    pub vine_id: String,
    /// The vine's status afterwards (`ACTIVE`, `DESTROYED` or `FAILED`).
    pub vine_status: String,
    /// Database rows written.
    pub databases: usize,
    /// Cache rows written.
    pub caches: usize,
    /// True when a newer DEPLOY of the vine had already been finalized, so nothing changed.
    pub superseded: bool,
}

/// The parts of `execution_metadata` finalization reads.
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    cluster_endpoint: Option<String>,
    #[serde(default)]
    cluster_arn: Option<String>,
    #[serde(default)]
    argocd_url: Option<String>,
    #[serde(default)]
    argocd_admin_password: Option<Secret<String>>,
    #[serde(default)]
    databases: Vec<Database>,
    #[serde(default)]
    caches: Vec<Cache>,
}

#[derive(Debug, Deserialize)]
struct Database {
    name: String,
    #[serde(default)]
    writer_endpoint: Option<String>,
    #[serde(default)]
    reader_endpoint: Option<String>,
    #[serde(default)]
    credentials_secret_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cache {
    name: String,
    #[serde(default)]
    primary_endpoint: Option<String>,
    #[serde(default)]
    reader_endpoint: Option<String>,
}

/// Whether jobs of this type (`provision_jobs.job_type`) are finalized:
/// DEPLOY and DESTROY change the vine; PLAN does not.
pub fn is_finalized(job_type: &str) -> bool {
    matches!(job_type, "DEPLOY" | "DESTROY")
}

/// Finalizes one job in its own transaction: all or nothing.
pub async fn finalize_job(client: &mut Client, job_id: &str) -> Result<Finalized, QueueError> {
    let tx = client
        .transaction()
        .await
        .map_err(QueueError::db(format!("begin finalizing job {job_id}")))?;
    let done = finalize_on(&tx, job_id).await?;
    tx.commit().await.map_err(QueueError::db(format!(
        "commit the finalization of job {job_id}"
    )))?;
    Ok(done)
}

/// Finalizes one job inside the caller's transaction (`tx` must be one: the
/// statements here are only atomic together when it is).
pub async fn finalize_on<C: GenericClient + Sync>(
    tx: &C,
    job_id: &str,
) -> Result<Finalized, QueueError> {
    let err = |message: String| QueueError::Finalize {
        job: job_id.to_string(),
        message,
    };
    if !looks_like_uuid(job_id) {
        return Err(err(
            "is not a job id (a UUID such as 3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10)".into(),
        ));
    }
    let row = tx
        .query_opt(
            "SELECT job_type, status, vine_id::text, error_message, execution_metadata, completed_at
               FROM provision_jobs WHERE id = $1::text::uuid FOR UPDATE",
            &[&job_id],
        )
        .await
        .map_err(QueueError::db(format!("read job {job_id}")))?
        .ok_or_else(|| err("no such job in provision_jobs; check the id".into()))?;
    let job_type: String = row.get(0);
    let status: String = row.get(1);
    let vine_id: String = row.get(2);
    let error_message: Option<String> = row.get(3);
    let metadata: Option<serde_json::Value> = row.get(4);
    let completed_at: Option<jiff::Timestamp> = row.get(5);
    if !is_finalized(&job_type) {
        return Err(err(format!(
            "is a {job_type} job; only DEPLOY and DESTROY jobs are finalized"
        )));
    }
    let Some(completed_at) =
        completed_at.filter(|_| matches!(status.as_str(), "SUCCESS" | "FAILED" | "CANCELLED"))
    else {
        return Err(err(format!(
            "is {status}; finalization runs once the job has finished (SUCCESS, FAILED or CANCELLED)"
        )));
    };

    // Lock the vine, and leave it alone when a newer DEPLOY was finalized already.
    let vine = tx
        .query_opt(
            "SELECT (SELECT l.completed_at FROM provision_jobs l WHERE l.id = v.last_deploy_job_id AND l.id <> $2::text::uuid)
               FROM vines v WHERE v.id = $1::text::uuid FOR UPDATE",
            &[&vine_id, &job_id],
        )
        .await
        .map_err(QueueError::db(format!("lock vine {vine_id}")))?
        .ok_or_else(|| err(format!("its vine {vine_id} does not exist")))?;
    let newer: Option<jiff::Timestamp> = vine.get(0);
    if newer.is_some_and(|t| t > completed_at) {
        return Ok(Finalized {
            job_id: job_id.to_string(),
            vine_id,
            vine_status: String::new(),
            databases: 0,
            caches: 0,
            superseded: true,
        });
    }

    let mut done = Finalized {
        job_id: job_id.to_string(),
        vine_id: vine_id.clone(),
        vine_status: String::new(),
        databases: 0,
        caches: 0,
        superseded: false,
    };
    if status == "SUCCESS" && job_type == "DESTROY" {
        for table in ["vine_cluster", "vine_databases", "vine_caches"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE vine_id = $1::text::uuid"),
                &[&vine_id],
            )
            .await
            .map_err(QueueError::db(format!(
                "remove the {table} rows of vine {vine_id}"
            )))?;
        }
        tx.execute(
            "UPDATE vines SET status = 'DESTROYED', error_message = NULL, last_deploy_job_id = $2::text::uuid,
                              updated_at = now()
             WHERE id = $1::text::uuid",
            &[&vine_id, &job_id],
        )
        .await
        .map_err(QueueError::db(format!("mark vine {vine_id} DESTROYED")))?;
        done.vine_status = "DESTROYED".into();
    } else if status == "SUCCESS" {
        let metadata = metadata.filter(|m| !m.is_null()).ok_or_else(|| {
            err("succeeded but has no execution_metadata; the worker must report the DEPLOY report's execution_metadata".into())
        })?;
        let m: Metadata = serde_json::from_value(metadata).map_err(|e| {
            err(format!(
                "execution_metadata is not the shape of docs/report.md: {e}"
            ))
        })?;
        let password = m
            .argocd_admin_password
            .as_ref()
            .map(|p| p.expose().as_str());
        tx.execute(
            "INSERT INTO vine_cluster (vine_id, cluster_name, cluster_endpoint, cluster_arn, argocd_url,
                                       argocd_admin_password, job_id, updated_at)
             VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7::text::uuid, now())
             ON CONFLICT (vine_id) DO UPDATE SET
                 cluster_name = excluded.cluster_name, cluster_endpoint = excluded.cluster_endpoint,
                 cluster_arn = excluded.cluster_arn, argocd_url = excluded.argocd_url,
                 argocd_admin_password = coalesce(excluded.argocd_admin_password, vine_cluster.argocd_admin_password),
                 job_id = excluded.job_id, updated_at = now()",
            &[&vine_id, &m.cluster_name, &m.cluster_endpoint, &m.cluster_arn, &m.argocd_url, &password, &job_id],
        )
        .await
        .map_err(QueueError::db(format!("write vine_cluster of vine {vine_id}")))?;
        for d in &m.databases {
            tx.execute(
                "INSERT INTO vine_databases (vine_id, name, writer_endpoint, reader_endpoint, credentials_secret_arn, updated_at)
                 VALUES ($1::text::uuid, $2, $3, $4, $5, now())
                 ON CONFLICT (vine_id, name) DO UPDATE SET
                     writer_endpoint = excluded.writer_endpoint, reader_endpoint = excluded.reader_endpoint,
                     credentials_secret_arn = excluded.credentials_secret_arn, updated_at = now()",
                &[&vine_id, &d.name, &d.writer_endpoint, &d.reader_endpoint, &d.credentials_secret_arn],
            )
            .await
            .map_err(QueueError::db(format!("write vine_databases row {} of vine {vine_id}", d.name)))?;
            done.databases += 1;
        }
        for c in &m.caches {
            tx.execute(
                "INSERT INTO vine_caches (vine_id, name, primary_endpoint, reader_endpoint, updated_at)
                 VALUES ($1::text::uuid, $2, $3, $4, now())
                 ON CONFLICT (vine_id, name) DO UPDATE SET
                     primary_endpoint = excluded.primary_endpoint, reader_endpoint = excluded.reader_endpoint,
                     updated_at = now()",
                &[&vine_id, &c.name, &c.primary_endpoint, &c.reader_endpoint],
            )
            .await
            .map_err(QueueError::db(format!("write vine_caches row {} of vine {vine_id}", c.name)))?;
            done.caches += 1;
        }
        tx.execute(
            "UPDATE vines SET status = 'ACTIVE', error_message = NULL, last_deploy_job_id = $2::text::uuid,
                              updated_at = now()
             WHERE id = $1::text::uuid",
            &[&vine_id, &job_id],
        )
        .await
        .map_err(QueueError::db(format!("mark vine {vine_id} ACTIVE")))?;
        done.vine_status = "ACTIVE".into();
    } else {
        let message =
            error_message.unwrap_or_else(|| format!("{job_type} job {job_id} ended {status}"));
        tx.execute(
            "UPDATE vines SET status = 'FAILED', error_message = $3, last_deploy_job_id = $2::text::uuid,
                              updated_at = now()
             WHERE id = $1::text::uuid",
            &[&vine_id, &job_id, &message],
        )
        .await
        .map_err(QueueError::db(format!("mark vine {vine_id} FAILED")))?;
        done.vine_status = "FAILED".into();
    }
    tx.execute(
        "UPDATE provision_jobs SET finalized_at = now() WHERE id = $1::text::uuid",
        &[&job_id],
    )
    .await
    .map_err(QueueError::db(format!("mark job {job_id} finalized")))?;
    Ok(done)
}

fn looks_like_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
