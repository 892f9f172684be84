//! The child-process runner, with a shell script standing in for the
//! `tendril plan|deploy` executable (it checks the arguments and job file it
//! is given, and behaves per job id).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tendril::job::JobFile;
use tendril::worker::logs::{LogLine, LogSink, Redactor};
use tendril::worker::process::ProcessRunner;
use tendril::worker::{JobRunner, OutcomeStatus, RunContext};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = r#"#!/bin/sh
sub="$1"; [ "$2" = "--job" ] || { echo "error: no --job" >&2; exit 2; }
file="$3"; [ "$4 $5" = "--output json" ] || { echo "error: no --output json" >&2; exit 2; }
echo "sub $sub mode $(stat -c %a "$file")" >&2
grep -q '"tendril"' "$file" && echo "runner config present" >&2
echo "$file" > "$(dirname "$file")/last-job-file"
case "$(cat "$file")" in
  *job-ok*) echo "Apply complete! Resources: 3 added" >&2
            echo '{"status": "SUCCESS", "execution_metadata": {"cluster_name": "shop-prod", "argocd_admin_password": "pw"}}' ;;
  *job-fail*) echo "error: terraform apply failed: quota exceeded" >&2; exit 1 ;;
  *job-nometa*) echo '{"status": "SUCCESS"}' ;;
  *job-long*) trap 'echo "interrupt received, stopping" >&2; exit 130' INT
              echo "applying" >&2
              while true; do sleep 0.05; done ;;
esac
"#;

fn job(id: &str, job_type: &str) -> JobFile {
    let text = format!(
        r#"{{"job": {{"id": "{id}", "job_type": "{job_type}", "vine_id": "v", "vineyard_id": "vy", "plan_job_id": "p",
            "config_snapshot": {{"project_name": "p", "environment": "e", "region": "r", "provider": "local"}}}},
            "cloud_identity": {{"provider": "local"}}, "tendril": {{"artifacts": {{"store": "local", "dir": "a"}}}}}}"#
    );
    JobFile::parse(&text, std::path::Path::new("/srv")).unwrap()
}

fn setup() -> (tempfile::TempDir, ProcessRunner) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("fake-tendril");
    std::fs::write(&exe, SCRIPT).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let runner = ProcessRunner {
        exe,
        scratch_dir: scratch,
        cancel_timeout: Duration::from_secs(30),
    };
    (dir, runner)
}

fn ctx() -> (RunContext, tokio::sync::mpsc::UnboundedReceiver<LogLine>) {
    let (sink, rx, _) = LogSink::channel(Redactor::default());
    (
        RunContext {
            logs: sink,
            cancel: CancellationToken::new(),
        },
        rx,
    )
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<LogLine>) -> String {
    let mut s = String::new();
    while let Ok(l) = rx.try_recv() {
        s.push_str(&l.text);
        s.push('\n');
    }
    s
}

#[tokio::test]
async fn success_failure_and_missing_metadata() {
    let (dir, runner) = setup();
    let (c, mut rx) = ctx();
    let out = runner.run(job("job-ok", "DEPLOY"), c).await;
    assert_eq!(out.status, OutcomeStatus::Success, "{out:?}");
    assert_eq!(out.execution_metadata["cluster_name"], "shop-prod");
    let logs = drain(&mut rx);
    assert!(logs.contains("sub deploy mode 600"), "{logs}");
    assert!(logs.contains("runner config present"), "{logs}");
    assert!(logs.contains("Apply complete!"), "{logs}");
    assert!(
        !logs.contains("\"pw\""),
        "the report (stdout) is not shipped: {logs}"
    );
    let used = std::fs::read_to_string(dir.path().join("scratch/last-job-file")).unwrap();
    assert!(
        !std::path::Path::new(used.trim()).exists(),
        "the job file must be removed after the run"
    );

    let (c, _rx) = ctx();
    let out = runner.run(job("job-fail", "PLAN"), c).await;
    assert_eq!(out.status, OutcomeStatus::Failed);
    assert_eq!(
        out.error_message.as_deref(),
        Some("terraform apply failed: quota exceeded")
    );

    let (c, _rx) = ctx();
    let out = runner.run(job("job-nometa", "DEPLOY"), c).await;
    assert_eq!(out.status, OutcomeStatus::Failed);
    assert!(out.error_message.unwrap().contains("execution_metadata"));
}

#[tokio::test]
async fn cancelling_sends_sigint_to_the_process_group() {
    // A worker started in the background by a non-interactive shell has
    // SIGINT ignored; its jobs must still get SIGINT's default action (a shell
    // script cannot even trap a signal ignored on entry). Ignored here for
    // the whole test, restored at the end.
    // SAFETY: signal(2) only changes this process's disposition for SIGINT.
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let (_dir, runner) = setup();
    let (c, mut rx) = ctx();
    let cancel = c.cancel.clone();
    let run = tokio::spawn(async move { runner.run(job("job-long", "DEPLOY"), c).await });
    // Wait until the child is applying, then cancel.
    let mut seen = String::new();
    while !seen.contains("applying") {
        let l = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&l.text);
    }
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, OutcomeStatus::Cancelled, "{out:?}");
    let logs = drain(&mut rx);
    assert!(
        logs.contains("interrupt received, stopping"),
        "the child handled SIGINT: {logs}"
    );
    assert!(logs.contains("SIGINT sent"), "{logs}");
    // SAFETY: as above, puts back what SIGINT did before this test.
    unsafe { libc::signal(libc::SIGINT, previous) };
}
