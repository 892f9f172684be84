//! The child-process runner, with a shell script standing in for the
//! `tendril plan|deploy` executable: it checks its arguments, reads the job
//! file from stdin, writes its result file, and behaves per job id.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tendril::job::JobFile;
use tendril::job::JobStatus;
use tendril::worker::logs::{LogLine, LogSink, Redactor};
use tendril::worker::process::ProcessRunner;
use tendril::worker::{JobRunner, RunContext};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = r#"#!/bin/sh
sub="$1"; [ "$2 $3" = "--job /dev/stdin" ] || { echo "error: no --job /dev/stdin" >&2; exit 2; }
[ "$4" = "--report-file" ] || { echo "error: no --report-file" >&2; exit 2; }
result="$5"
job="$(cat /dev/stdin)"
out="$(dirname "$0")"
echo "sub $sub tmp mode $(stat -c %a "$TMPDIR")" >&2
echo "$TMPDIR" > "$out/last-tmpdir"
echo "$result" > "$out/last-result"
touch "$TMPDIR/plan.tfplan"
case "$job" in *'"tendril"'*) echo "runner config present" >&2 ;; esac
case "$job" in
  *job-ok*) echo "Apply complete! Resources: 3 added" >&2
            echo '{"job_id": "job-ok", "status": "SUCCESS", "execution_metadata": {"cluster_name": "shop-prod", "argocd_admin_password": "pw"}}' > "$result" ;;
  *job-stale*) echo '{"job_id": "job-stale", "status": "FAILED", "phase": "config_hash", "error": "Configuration has changed since the plan was generated. Please re-plan."}' > "$result"; exit 1 ;;
  *job-nometa*) echo '{"job_id": "job-nometa", "status": "SUCCESS"}' > "$result" ;;
  *job-long*) trap 'echo "interrupt received, stopping" >&2; echo "{\"job_id\": \"job-long\", \"status\": \"CANCELLED\", \"phase\": \"terraform_apply\", \"error\": \"terraform apply was cancelled\"}" > "$result"; exit 130' INT
              echo "applying" >&2
              while true; do sleep 0.05; done ;;
  *job-crash*) sh -c 'trap "" INT; echo $$ > "$0/leftover.pid"; exec sleep 300' "$out" &
               while [ ! -s "$out/leftover.pid" ]; do sleep 0.02; done
               echo "dying" >&2
               kill -9 $$ ;;
esac
"#;

fn job(id: &str, job_type: &str) -> JobFile {
    let text = format!(
        r#"{{"job": {{"id": "{id}", "job_type": "{job_type}", "vine_id": "v", "vineyard_id": "vy", "plan_job_id": "p",
            "config_snapshot": {{"project_name": "p", "environment": "e", "region": "r", "provider": "local"}}}},
            "cloud_identity": {{"provider": "local"}}, "tendril": {{"artifacts": {{"store": "local", "dir": "a"}}}}}}"#
    );
    JobFile::parse(&text, Path::new("/srv")).unwrap()
}

fn setup(cancel_timeout: Duration) -> (tempfile::TempDir, ProcessRunner) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("fake-tendril");
    std::fs::write(&exe, SCRIPT).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let runner = ProcessRunner {
        exe,
        scratch_dir: scratch,
        cancel_timeout,
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

fn scratch_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("scratch")).unwrap().count() == 0
}

#[tokio::test]
async fn results_come_from_the_result_file_and_the_scratch_goes() {
    let (dir, runner) = setup(Duration::from_secs(30));
    let (c, mut rx) = ctx();
    let out = runner.run(job("job-ok", "DEPLOY"), c).await;
    assert_eq!(out.status, JobStatus::Success, "{out:?}");
    assert_eq!(out.execution_metadata["cluster_name"], "shop-prod");
    let logs = drain(&mut rx);
    assert!(logs.contains("sub deploy tmp mode 700"), "{logs}");
    assert!(logs.contains("runner config present"), "{logs}");
    assert!(logs.contains("Apply complete!"), "{logs}");
    let tmp = std::fs::read_to_string(dir.path().join("last-tmpdir")).unwrap();
    assert!(
        !Path::new(tmp.trim()).exists(),
        "the child's TMPDIR must be removed after the run"
    );
    assert!(scratch_is_empty(dir.path()));

    // The stale-plan sentence is the whole error; the phase has its own field.
    let (c, _rx) = ctx();
    let out = runner.run(job("job-stale", "DEPLOY"), c).await;
    assert_eq!(out.status, JobStatus::Failed);
    assert_eq!(
        out.error_message.as_deref(),
        Some("Configuration has changed since the plan was generated. Please re-plan.")
    );
    assert_eq!(out.error_phase.as_deref(), Some("config_hash"));

    let (c, _rx) = ctx();
    let out = runner.run(job("job-nometa", "DEPLOY"), c).await;
    assert_eq!(out.status, JobStatus::Failed);
    assert!(out.error_message.unwrap().contains("execution_metadata"));
    assert!(scratch_is_empty(dir.path()));
}

#[tokio::test]
async fn cancelling_sends_sigint_to_the_process_group() {
    // A worker started in the background by a non-interactive shell has
    // SIGINT ignored; its jobs must still get SIGINT's default action (a shell
    // script cannot even trap a signal ignored on entry). Ignored here for
    // the whole test, restored at the end.
    // SAFETY: signal(2) only changes this process's disposition for SIGINT.
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let (dir, runner) = setup(Duration::from_secs(30));
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
    assert_eq!(out.status, JobStatus::Cancelled, "{out:?}");
    assert_eq!(out.error_phase.as_deref(), Some("terraform_apply"));
    let logs = drain(&mut rx);
    assert!(
        logs.contains("interrupt received, stopping"),
        "the child handled SIGINT: {logs}"
    );
    assert!(logs.contains("SIGINT sent"), "{logs}");
    assert!(scratch_is_empty(dir.path()));
    // SAFETY: as above, puts back what SIGINT did before this test.
    unsafe { libc::signal(libc::SIGINT, previous) };
}

fn alive(pid: i32) -> bool {
    // A zombie (already dead, waiting to be reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn a_child_that_dies_abnormally_leaves_no_process_and_no_file() {
    // The leftover ignores SIGINT: the runner must kill it after the bound.
    let (dir, runner) = setup(Duration::from_secs(1));
    let (c, mut rx) = ctx();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        runner.run(job("job-crash", "DEPLOY"), c),
    )
    .await
    .unwrap();
    assert_eq!(out.status, JobStatus::Failed, "{out:?}");
    let msg = out.error_message.unwrap();
    assert!(msg.contains("without writing its result"), "{msg}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("leftover.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the job's leftover process {pid} still runs");
    let logs = drain(&mut rx);
    assert!(
        logs.contains("1 process(es) of the job were still running") && logs.contains("1 killed"),
        "{logs}"
    );
    assert!(
        scratch_is_empty(dir.path()),
        "the scratch directory remains"
    );
}

#[test]
fn scratch_left_by_a_dead_worker_is_swept() {
    let (dir, runner) = setup(Duration::from_secs(1));
    // a pid above the kernel's pid_max cannot be running
    let dead = dir.path().join("scratch/tendril-job-2147483646-x-0");
    std::fs::create_dir_all(dead.join("tmp")).unwrap();
    let mine = dir
        .path()
        .join(format!("scratch/tendril-job-{}-y-0", std::process::id()));
    std::fs::create_dir_all(&mine).unwrap();
    assert_eq!(runner.remove_stale_scratch(), 1);
    assert!(!dead.exists());
    assert!(mine.exists(), "a live worker's scratch is kept");
}
