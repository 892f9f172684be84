//! The Trellis client against the local Trellis test server (real HTTP).

use std::time::Duration;
use tendril::Secret;
use tendril::job::{JobId, JobType};
use tendril::queue::trellis::{TrellisClient, TrellisConfig};
use tendril::queue::{JobState, LogChunk, LogStream, QueueError, WorkerState};
use tendril_testkit::trellis::Trellis;

fn client(url: &str, token: &str) -> TrellisClient {
    TrellisClient::new(TrellisConfig {
        url: url.to_string(),
        worker_id: "worker-1".into(),
        token: Secret::new(token.to_string()),
        request_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn job(id: &str) -> serde_json::Value {
    serde_json::json!({
        "job": {"id": id, "job_type": "PLAN", "vine_id": "v1", "vineyard_id": "vy1",
                "config_snapshot": {"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws"}},
        "cloud_identity": {"provider": "aws", "role_arn": "arn:aws:iam::123456789012:role/GrapeProvisionerRole", "external_id": "ext-1"}
    })
}

#[tokio::test]
async fn claims_reports_logs_and_heartbeats_with_auth_headers() {
    let t = Trellis::start("worker-1", "tok-abc").await;
    let c = client(&t.url(), "tok-abc");
    assert!(c.claim().await.unwrap().is_none(), "204 means no job");
    t.push_job(job("j1"));
    let claimed = c.claim().await.unwrap().unwrap();
    assert_eq!(claimed.job.id, JobId("j1".into()));
    assert_eq!(claimed.job.job_type, JobType::Plan);
    let id = claimed.job.id.clone();
    c.update_status(&id, JobState::Processing, None, None)
        .await
        .unwrap();
    c.send_logs(
        &id,
        &LogChunk {
            log_chunk: "hello\n".into(),
            stream_type: LogStream::Stderr,
        },
    )
    .await
    .unwrap();
    let meta = serde_json::json!({"cluster_name": "c"});
    c.update_status(&id, JobState::Success, None, Some(&meta))
        .await
        .unwrap();
    c.heartbeat(WorkerState::Draining, Some(&id)).await.unwrap();

    let st = t.statuses();
    assert_eq!(st.len(), 2);
    assert_eq!(
        (st[0].status.as_str(), st[1].status.as_str()),
        ("PROCESSING", "SUCCESS")
    );
    assert_eq!(st[1].execution_metadata, meta);
    let logs = t.logs("j1");
    assert_eq!(logs.len(), 1);
    assert_eq!(
        (logs[0].log_chunk.as_str(), logs[0].stream_type.as_str()),
        ("hello\n", "STDERR")
    );
    assert_eq!(
        t.heartbeats(),
        vec![
            serde_json::json!({"worker_id": "worker-1", "status": "DRAINING", "current_job_id": "j1"})
        ]
    );
    assert!(
        t.seen()
            .iter()
            .all(|s| s.token.as_deref() == Some("tok-abc") && s.status < 300)
    );
}

#[tokio::test]
async fn errors_are_classified_for_the_retry_policy() {
    let t = Trellis::start("worker-1", "tok-abc").await;
    // Wrong token: 401, and the message says what to check, never the token.
    let bad = client(&t.url(), "wrong-token");
    let e = bad.claim().await.unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
    assert!(e.to_string().contains("GRAPE_WORKER_TOKEN"), "{e}");
    assert!(!e.to_string().contains("wrong-token"), "{e}");

    let c = client(&t.url(), "tok-abc");
    t.fail_next(1, 503);
    let e = c.claim().await.unwrap_err();
    assert!(e.is_transient(), "503 is retried: {e}");
    t.fail_next(1, 429);
    assert!(
        c.heartbeat(WorkerState::Online, None)
            .await
            .unwrap_err()
            .is_transient()
    );
    t.set_outage(true);
    let e = c.claim().await.unwrap_err();
    assert!(
        matches!(e, QueueError::Unavailable { .. }),
        "a dropped connection is retried: {e}"
    );
    t.set_outage(false);
    // Nothing listening at all.
    let nobody = client("http://127.0.0.1:1", "tok-abc");
    assert!(nobody.claim().await.unwrap_err().is_transient());

    // A cancelled job: 409 on logs and status.
    let id = JobId("j9".into());
    t.cancel_job("j9");
    let chunk = LogChunk {
        log_chunk: "x\n".into(),
        stream_type: LogStream::Stdout,
    };
    assert!(c.send_logs(&id, &chunk).await.unwrap_err().is_job_gone());
    assert!(
        c.update_status(&id, JobState::Processing, None, None)
            .await
            .unwrap_err()
            .is_job_gone()
    );
    // 400 is not retried.
    t.fail_next(1, 400);
    let e = c.claim().await.unwrap_err();
    assert!(!e.is_transient() && !e.is_unauthorized(), "{e}");
}

#[tokio::test]
async fn an_unreadable_claim_is_reported_failed() {
    let t = Trellis::start("worker-1", "tok-abc").await;
    let c = client(&t.url(), "tok-abc");
    t.push_job(serde_json::json!({"id": "bad-1", "job_type": "DESTROY", "cloud_identity": {"provider": "local"}}));
    let e = c.claim().await.unwrap_err();
    assert!(e.to_string().contains("documented shape"), "{e}");
    let st = t.statuses();
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].job.as_str(), st[0].status.as_str()),
        ("bad-1", "FAILED")
    );
}

#[tokio::test]
async fn a_final_outcome_carries_its_phase_apart_from_the_message() {
    const STALE: &str = "Configuration has changed since the plan was generated. Please re-plan.";
    let t = Trellis::start("worker-1", "tok-abc").await;
    let c = client(&t.url(), "tok-abc");
    t.push_job(job("j-stale"));
    let claimed = c.claim().await.unwrap().unwrap();
    let outcome =
        tendril::queue::JobOutcome::failed(STALE).in_phase(Some("config_hash".to_string()));
    c.report_outcome(&claimed.job.id, &outcome).await.unwrap();
    let st = t.statuses();
    let last = st.last().unwrap();
    assert_eq!(last.status, "FAILED");
    assert_eq!(last.error_message.as_deref(), Some(STALE));
    assert_eq!(last.error_phase.as_deref(), Some("config_hash"));
}
