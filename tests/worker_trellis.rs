//! The worker loop against the local Trellis test server (real HTTP), with a
//! runner written here (the PLAN/DEPLOY pipelines plug in through the same trait).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendril::Secret;
use tendril::job::{JobFile, JobType};
use tendril::queue::trellis::{TrellisClient, TrellisConfig};
use tendril::worker::{
    JobOutcome, JobRunner, Progress, RetryPolicy, RunContext, Shutdown, WorkerConfig, WorkerError,
    WorkerEvent, run_worker,
};
use tendril_testkit::trellis::Trellis;

const TOKEN: &str = "worker-token-0123";

fn job(id: &str, job_type: &str) -> serde_json::Value {
    serde_json::json!({
        "job": {"id": id, "job_type": job_type, "vine_id": format!("vine-{id}"), "vineyard_id": "vy1",
                "plan_job_id": if job_type == "DEPLOY" { Some("plan-1") } else { None },
                "config_snapshot": {"project_name": "shop", "environment": "prod", "region": "eu-west-1", "provider": "aws"}},
        "cloud_identity": {"provider": "aws", "role_arn": "arn:aws:iam::123456789012:role/GrapeProvisionerRole",
                           "external_id": "ext-secret-42"}
    })
}

fn fast() -> WorkerConfig {
    WorkerConfig {
        claim_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(100),
        log_flush_interval: Duration::from_millis(50),
        log_flush_bytes: 1024,
        cancel_check_interval: Duration::from_millis(50),
        drain_grace: Duration::from_secs(60),
        retry: RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
        redact: vec![Secret::new(TOKEN.to_string())],
        ..WorkerConfig::default()
    }
}

fn client(t: &Trellis) -> Arc<TrellisClient> {
    Arc::new(
        TrellisClient::new(TrellisConfig {
            url: t.url(),
            worker_id: "w1".into(),
            token: Secret::new(TOKEN.into()),
            request_timeout: Duration::from_secs(10),
        })
        .unwrap(),
    )
}

fn events() -> (Progress, Arc<Mutex<Vec<WorkerEvent>>>) {
    let seen: Arc<Mutex<Vec<WorkerEvent>>> = Arc::default();
    let s = seen.clone();
    (Arc::new(move |e| s.lock().unwrap().push(e)), seen)
}

/// Writes `lines` numbered lines (some on STDERR, some with secrets), then succeeds;
/// DEPLOY jobs return execution_metadata.
struct Chatty {
    lines: usize,
    pause_every: usize,
}

impl JobRunner for Chatty {
    async fn run(&self, job: JobFile, ctx: RunContext) -> JobOutcome {
        ctx.logs.add_secret("argo-pass-777");
        for i in 0..self.lines {
            if i % 7 == 3 {
                ctx.logs.stderr(format!("line {i} warn"));
            } else {
                ctx.logs.stdout(format!(
                    "line {i} role external id ext-secret-42 password argo-pass-777 token {TOKEN}"
                ));
            }
            if self.pause_every > 0 && i % self.pause_every == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if job.job.vine_id == "vine-jfail" {
            return JobOutcome::failed(
                "AssumeRole with external id ext-secret-42 failed; admin argo-pass-777",
            );
        }
        match job.job.job_type {
            JobType::Plan | JobType::Destroy => {
                JobOutcome::success(serde_json::json!({"change_summary": {"add": 1}}))
            }
            JobType::Deploy => {
                JobOutcome::success(serde_json::json!({"cluster_name": "shop-prod"}))
            }
        }
    }
}

/// Logs a heartbeat line until cancelled; then returns CANCELLED.
struct UntilCancelled {
    runs: AtomicUsize,
}

impl JobRunner for UntilCancelled {
    async fn run(&self, _job: JobFile, ctx: RunContext) -> JobOutcome {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut i = 0;
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    ctx.logs.stdout("terraform: interrupt received, stopping gracefully");
                    return JobOutcome::cancelled("terraform was interrupted");
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    ctx.logs.stdout(format!("still applying {i}"));
                    i += 1;
                }
            }
        }
    }
}

fn expected_lines(t: &Trellis, job: &str, n: usize) {
    let text = t.log_text(job);
    let mut at = 0;
    for i in 0..n {
        let needle = format!("line {i} ");
        let pos = text[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("line {i} missing or out of order in:\n{text}"));
        at += pos + needle.len();
        assert_eq!(
            text.matches(&needle).count(),
            1,
            "line {i} shipped more than once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_jobs_ships_redacted_logs_in_order_and_reports() {
    let t = Trellis::start("w1", TOKEN).await;
    t.push_job(job("j1", "PLAN"));
    t.push_job(job("j2", "DEPLOY"));
    t.push_job(job("jfail", "PLAN"));
    let (progress, seen) = events();
    let cfg = WorkerConfig {
        max_jobs: Some(3),
        ..fast()
    };
    let summary = run_worker(
        client(&t),
        Arc::new(Chatty {
            lines: 300,
            pause_every: 50,
        }),
        cfg,
        Shutdown::default(),
        progress,
    )
    .await
    .unwrap();
    assert_eq!((summary.jobs, summary.succeeded, summary.failed), (3, 2, 1));
    let failed = t.statuses().pop().unwrap();
    assert_eq!(failed.status, "FAILED");
    assert_eq!(
        failed.error_message.as_deref(),
        Some("AssumeRole with external id [redacted] failed; admin [redacted]"),
        "job secrets are redacted from the reported error too"
    );

    let st: Vec<(String, String)> = t
        .statuses()
        .into_iter()
        .take(4)
        .map(|s| (s.job, s.status))
        .collect();
    let want: Vec<(String, String)> = [
        ("j1", "PROCESSING"),
        ("j1", "SUCCESS"),
        ("j2", "PROCESSING"),
        ("j2", "SUCCESS"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(st, want);
    assert_eq!(
        t.statuses()[3].execution_metadata,
        serde_json::json!({"cluster_name": "shop-prod"})
    );
    for j in ["j1", "j2"] {
        expected_lines(&t, j, 300);
        let text = t.log_text(j);
        assert!(
            !text.contains("ext-secret-42")
                && !text.contains("argo-pass-777")
                && !text.contains(TOKEN)
        );
        assert!(text.contains("external id [redacted] password [redacted] token [redacted]"));
        let logs = t.logs(j);
        assert!(
            logs.len() > 2,
            "300 lines of ~90 bytes must be split into several chunks"
        );
        assert!(
            logs.iter().all(|l| l.log_chunk.len() < 1024 + 200),
            "a chunk passed the size limit"
        );
        assert!(
            logs.iter()
                .any(|l| l.stream_type == "STDERR" && l.log_chunk.contains(" warn"))
        );
        assert!(
            logs.iter()
                .any(|l| l.stream_type == "SYSTEM" && l.log_chunk.contains("ended SUCCESS"))
        );
        // Every log post of the job came before its final status.
        let seen = t.seen();
        let last_log = seen
            .iter()
            .rposition(|s| s.path == format!("/api/jobs/{j}/logs"))
            .unwrap();
        let final_status = seen
            .iter()
            .position(|s| {
                s.path == format!("/api/jobs/{j}/status") && s.body["status"] == "SUCCESS"
            })
            .unwrap();
        assert!(last_log < final_status);
    }
    assert!(t.seen().iter().all(|s| s.token.as_deref() == Some(TOKEN)));
    let hb = t.heartbeats();
    assert!(hb.iter().all(|h| h["worker_id"] == "w1"));
    assert_eq!(
        hb.last().unwrap()["status"],
        "DRAINING",
        "the last heartbeat says the worker leaves"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, WorkerEvent::Stopped { jobs: 3 }))
    );
}

/// Logs numbered lines until `stop` is set, then succeeds; counts its lines.
struct UntilStopped {
    stop: Arc<AtomicBool>,
    lines: Arc<AtomicUsize>,
}

impl JobRunner for UntilStopped {
    async fn run(&self, _job: JobFile, ctx: RunContext) -> JobOutcome {
        let mut i = 0;
        while !self.stop.load(Ordering::SeqCst) {
            ctx.logs.stdout(format!("line {i} of the apply"));
            i += 1;
            self.lines.store(i, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        JobOutcome::success(serde_json::json!({"cluster_name": "c"}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_through_outages_and_server_errors() {
    let t = Arc::new(Trellis::start("w1", TOKEN).await);
    t.push_job(job("j1", "DEPLOY"));
    // The first claim meets a 503.
    t.fail_next(1, 503);
    let (progress, seen) = events();
    let cfg = WorkerConfig {
        max_jobs: Some(1),
        ..fast()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicUsize::new(0));
    let tt = t.clone();
    let st = stop.clone();
    let chaos = tokio::spawn(async move {
        // Wait until the job is running, then break the control plane a few times
        // while it keeps logging; let it finish only afterwards.
        while tt.logs("j1").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..3 {
            tt.set_outage(true);
            tokio::time::sleep(Duration::from_millis(150)).await;
            tt.set_outage(false);
            tt.fail_next(2, 502);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The final status meets an outage too.
        tt.set_outage(true);
        st.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        tt.set_outage(false);
    });
    let runner = Arc::new(UntilStopped {
        stop: stop.clone(),
        lines: lines.clone(),
    });
    let summary = run_worker(client(&t), runner, cfg, Shutdown::default(), progress)
        .await
        .unwrap();
    chaos.await.unwrap();
    assert_eq!(summary.succeeded, 1);
    let n = lines.load(Ordering::SeqCst);
    assert!(n > 10, "the job logged only {n} lines");
    expected_lines(&t, "j1", n);
    let finals: Vec<_> = t
        .statuses()
        .into_iter()
        .filter(|s| s.status == "SUCCESS")
        .collect();
    assert_eq!(finals.len(), 1);
    assert!(
        t.seen().iter().any(|s| s.status == 0) && t.seen().iter().any(|s| s.status >= 500),
        "the test must actually have hit outages and 5xx"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, WorkerEvent::Retrying { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_worker_and_cancels_the_job() {
    let t = Arc::new(Trellis::start("w1", TOKEN).await);
    t.push_job(job("j1", "DEPLOY"));
    let runner = Arc::new(UntilCancelled {
        runs: AtomicUsize::new(0),
    });
    let tt = t.clone();
    tokio::spawn(async move {
        while tt.logs("j1").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tt.revoke_token();
    });
    let (progress, _) = events();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        run_worker(
            client(&t),
            runner.clone(),
            fast(),
            Shutdown::default(),
            progress,
        ),
    )
    .await
    .expect("the worker must stop on 401")
    .unwrap_err();
    assert!(matches!(err, WorkerError::Unauthorized(_)));
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(msg.contains("GRAPE_WORKER_TOKEN"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    assert_eq!(runner.runs.load(Ordering::SeqCst), 1);
}

/// Logs, waits until the worker drains, logs again, and succeeds.
struct FinishesAfterDrain {
    drain: tokio_util::sync::CancellationToken,
}

impl JobRunner for FinishesAfterDrain {
    async fn run(&self, _job: JobFile, ctx: RunContext) -> JobOutcome {
        ctx.logs.stdout("line 0 before the drain");
        tokio::select! {
            _ = self.drain.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => return JobOutcome::failed("no drain within 60 s"),
        }
        ctx.logs.stdout("line 1 after the drain");
        JobOutcome::success(serde_json::Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_a_short_job_finish_and_claims_nothing_more() {
    let t = Arc::new(Trellis::start("w1", TOKEN).await);
    t.push_job(job("j1", "PLAN"));
    t.push_job(job("j2", "PLAN"));
    let shutdown = Shutdown::default();
    let (progress, _) = events();
    let tt = t.clone();
    let drain = shutdown.drain.clone();
    tokio::spawn(async move {
        while tt.logs("j1").is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drain.cancel();
    });
    let runner = Arc::new(FinishesAfterDrain {
        drain: shutdown.drain.clone(),
    });
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_worker(client(&t), runner, fast(), shutdown, progress),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((summary.jobs, summary.succeeded), (1, 1));
    assert_eq!(t.pending_jobs(), 1, "a draining worker must not claim");
    expected_lines(&t, "j1", 2);
    assert_eq!(t.statuses().last().unwrap().status, "SUCCESS");
    assert!(t.log_text("j1").contains("worker is draining"));
    assert!(t.heartbeats().iter().any(|h| h["status"] == "DRAINING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_cancels_a_long_job_after_the_grace_period() {
    let t = Arc::new(Trellis::start("w1", TOKEN).await);
    t.push_job(job("j1", "DEPLOY"));
    let shutdown = Shutdown::default();
    let (progress, seen) = events();
    let tt = t.clone();
    let drain = shutdown.drain.clone();
    tokio::spawn(async move {
        while tt.logs("j1").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drain.cancel();
    });
    let cfg = WorkerConfig {
        drain_grace: Duration::from_millis(300),
        ..fast()
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_worker(
            client(&t),
            Arc::new(UntilCancelled {
                runs: AtomicUsize::new(0),
            }),
            cfg,
            shutdown,
            progress,
        ),
    )
    .await
    .expect("the drained worker must stop")
    .unwrap();
    assert_eq!(summary.cancelled, 1);
    let last = t.statuses().pop().unwrap();
    assert_eq!(last.status, "CANCELLED");
    assert!(last.error_message.unwrap().contains("drain grace period"));
    let text = t.log_text("j1");
    assert!(
        text.contains("interrupt received"),
        "the runner's last words are flushed: {text}"
    );
    assert!(text.contains("ended CANCELLED"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, WorkerEvent::Cancelling { .. }))
    );
    assert!(t.heartbeats().iter().any(|h| h["status"] == "DRAINING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_upstream_is_stopped_and_the_worker_goes_on() {
    let t = Arc::new(Trellis::start("w1", TOKEN).await);
    t.push_job(job("j1", "DEPLOY"));
    let tt = t.clone();
    tokio::spawn(async move {
        while tt.logs("j1").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tt.cancel_job("j1");
        tt.push_job(job("j2", "PLAN"));
    });
    struct Mixed(UntilCancelled, Chatty);
    impl JobRunner for Mixed {
        async fn run(&self, job: JobFile, ctx: RunContext) -> JobOutcome {
            if job.job.id.0 == "j1" {
                self.0.run(job, ctx).await
            } else {
                self.1.run(job, ctx).await
            }
        }
    }
    let (progress, seen) = events();
    let cfg = WorkerConfig {
        max_jobs: Some(2),
        ..fast()
    };
    let runner = Arc::new(Mixed(
        UntilCancelled {
            runs: AtomicUsize::new(0),
        },
        Chatty {
            lines: 5,
            pause_every: 0,
        },
    ));
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_worker(client(&t), runner, cfg, Shutdown::default(), progress),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((summary.cancelled, summary.succeeded), (1, 1));
    let ev = seen.lock().unwrap();
    assert!(ev.iter().any(|e| matches!(e, WorkerEvent::Cancelling { job, reason } if job.0 == "j1" && reason.contains("409"))));
    assert!(
        ev.iter().any(
            |e| matches!(e, WorkerEvent::Finished { job, reported: false, .. } if job.0 == "j1")
        )
    );
    assert_eq!(t.statuses().last().unwrap().status, "SUCCESS");
}
