//! `tendril worker`: claim and run jobs from Trellis or a PostgreSQL queue.

use backon::{ExponentialBuilder, Retryable};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tendril::Secret;
use tendril::job::{JobFile, RunnerConfig, parse_duration};
use tendril::queue::postgres::PgQueue;
use tendril::queue::trellis::{TrellisClient, TrellisConfig};
use tendril::worker::process::ProcessRunner;
use tendril::worker::telemetry::{self, Telemetry};
use tendril::worker::{
    JobQueue, Progress, Shutdown, WorkerConfig, WorkerError, WorkerEvent, run_worker,
};

/// Flags of `tendril worker`.
#[derive(clap::Args)]
pub struct Args {
    /// The control plane's base URL (Trellis mode).
    #[arg(long, env = "TRELLIS_URL")]
    trellis_url: Option<String>,
    /// A PostgreSQL queue instead of Trellis: postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    #[arg(
        long,
        env = "TENDRIL_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "trellis_url"
    )]
    database_url: Option<String>,
    /// This worker's id (X-Worker-ID; workers.id in PostgreSQL mode; default there: HOSTNAME-PID).
    #[arg(long, env = "GRAPE_WORKER_ID")]
    worker_id: Option<String>,
    /// This worker's token (X-Worker-Token). Never logged.
    #[arg(long, env = "GRAPE_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// The `tendril` part of every job file (YAML or JSON; either the part itself
    /// or a mapping with a `tendril:` key). Relative paths resolve against its directory.
    #[arg(long, value_name = "FILE")]
    runner_config: Option<PathBuf>,
    /// Wait between claims while there is no job.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    claim_interval: Duration,
    /// Heartbeat period.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Ship log chunks at least this often (and sooner past 10 KiB).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    log_flush_interval: Duration,
    /// On SIGTERM/SIGINT, how long the current job may run before it is cancelled.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    drain_grace: Duration,
    /// PostgreSQL mode: how often to check whether the running job was cancelled.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    cancel_check_interval: Duration,
    /// PostgreSQL mode: a worker whose heartbeat is older than this is dead.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    stale_heartbeat: Duration,
    /// PostgreSQL mode: a running job silent for this long is stale.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    stale_silence: Duration,
    /// Exit when a claim finds no job.
    #[arg(long)]
    once: bool,
    /// Exit after this many jobs.
    #[arg(long)]
    max_jobs: Option<usize>,
    /// Serve /healthz and /metrics (Prometheus) over HTTP on this address,
    /// e.g. 127.0.0.1:9090 (off by default).
    #[arg(long, value_name = "HOST:PORT", value_parser = listen_addr)]
    listen: Option<SocketAddr>,
}

/// `--listen`: an address with a port (a host name resolves to its first address).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let invalid = |why: String| {
        format!(
            "`{text}` is not an address to listen on ({why}); write HOST:PORT, e.g. 127.0.0.1:9090 or [::]:9090"
        )
    };
    text.to_socket_addrs()
        .map_err(|e| invalid(e.to_string()))?
        .next()
        .ok_or_else(|| invalid("it resolves to no address".into()))
}

/// Errors of the command itself (configuration), on top of the worker's.
#[derive(Debug, thiserror::Error)]
enum CmdError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Queue(#[from] tendril::queue::QueueError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(
        "cannot listen on {addr} (--listen): {source}; choose another address or port, or stop what holds it"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("runner config {path}: {source}")]
    RunnerConfig {
        path: PathBuf,
        source: tendril::job::JobError,
    },
}

/// Runs `tendril worker`.
pub fn run(args: Args) -> ExitCode {
    let rt = super::runtime();
    match rt.block_on(worker(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// Reads the `tendril` part from a file, through the job file parser (so
/// paths resolve and values validate exactly as in a job file).
fn load_runner_config(path: &Path) -> Result<RunnerConfig, CmdError> {
    let err = |source| CmdError::RunnerConfig {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|source| {
        err(tendril::job::JobError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        err(tendril::job::JobError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })?;
    let part = match value.get("tendril") {
        Some(t) => t.clone(),
        None => value,
    };
    let doc = serde_json::json!({
        "job": {"id": "runner-config", "job_type": "PLAN", "vine_id": "-", "vineyard_id": "-",
                "config_snapshot": {"project_name": "-", "environment": "-", "region": "-", "provider": "local"}},
        "cloud_identity": {"provider": "local"},
        "tendril": part,
    });
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    JobFile::parse(&doc.to_string(), &base)
        .map(|j| j.tendril)
        .map_err(err)
}

fn printer(telemetry: Option<Arc<Telemetry>>) -> Progress {
    Arc::new(move |e| {
        if let Some(t) = &telemetry {
            t.observe(&e);
        }
        print_event(e)
    })
}

fn print_event(e: WorkerEvent) {
    match e {
        WorkerEvent::Started | WorkerEvent::Heartbeat { .. } => {}
        WorkerEvent::Claimed { job, job_type } => eprintln!("claimed {job_type} job {job}"),
        WorkerEvent::Finished {
            job,
            status,
            reported,
            ..
        } => {
            let note = if reported {
                ""
            } else {
                " (the queue did not take the result)"
            };
            eprintln!("job {job} ended {status}{note}")
        }
        WorkerEvent::Skipped { job, reason } => eprintln!("skipped job {job}: {reason}"),
        WorkerEvent::Cancelling { job, reason } => eprintln!("cancelling job {job}: {reason}"),
        WorkerEvent::Retrying { error, delay } => {
            eprintln!("warning: {error} (next try in {} ms)", delay.as_millis())
        }
        WorkerEvent::QueueError { error } => eprintln!("warning: {error}"),
        WorkerEvent::Housekeeping { note } => eprintln!("{note}"),
        WorkerEvent::Draining => eprintln!("draining: no more claims"),
        WorkerEvent::Stopped { jobs } => eprintln!("worker stopped after {jobs} job(s)"),
    }
}

/// SIGTERM or SIGINT drains; a second one stops now.
fn install_signals(shutdown: &Shutdown) {
    let s = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!(
                "warning: cannot install signal handlers; SIGTERM will stop the worker abruptly"
            );
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if round == 0 {
                eprintln!("signal received: draining (send it again to stop now)");
                s.drain.cancel();
            } else {
                eprintln!("second signal: cancelling the current job now");
                s.now.cancel();
            }
        }
    });
}

/// Binds `--listen` (before anything is claimed: a port in use is an error
/// at start) and serves health and metrics until the worker stops.
fn start_telemetry(
    addr: SocketAddr,
    window: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Arc<Telemetry>, CmdError> {
    let bind = || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    };
    let listener = bind().map_err(|source| CmdError::Listen { addr, source })?;
    let telemetry = Arc::new(Telemetry::new(window));
    eprintln!(
        "serving /healthz and /metrics on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    tokio::spawn(telemetry::serve(listener, telemetry.clone(), stop));
    Ok(telemetry)
}

async fn worker(args: Args) -> Result<(), CmdError> {
    let serving = tokio_util::sync::CancellationToken::new();
    let _stop_serving = serving.clone().drop_guard();
    let telemetry = match args.listen {
        Some(addr) => Some(start_telemetry(
            addr,
            args.stale_heartbeat,
            serving.clone(),
        )?),
        None => None,
    };
    let progress = printer(telemetry);
    let runner_config = match &args.runner_config {
        Some(p) => load_runner_config(p)?,
        None => RunnerConfig::default(),
    };
    let token = args.worker_token.filter(|t| !t.is_empty()).map(Secret::new);
    let config = WorkerConfig {
        runner: runner_config,
        claim_interval: args.claim_interval,
        heartbeat_interval: args.heartbeat_interval,
        log_flush_interval: args.log_flush_interval,
        drain_grace: args.drain_grace,
        cancel_check_interval: args.cancel_check_interval,
        stale_heartbeat: args.stale_heartbeat,
        stale_silence: args.stale_silence,
        exit_when_idle: args.once,
        max_jobs: args.max_jobs,
        redact: token.iter().cloned().collect(),
        ..WorkerConfig::default()
    };
    let runner = Arc::new(ProcessRunner::current_exe().map_err(|e| {
        CmdError::Usage(format!(
            "cannot find the tendril executable to run jobs with: {e}"
        ))
    })?);
    let swept = runner.remove_stale_scratch();
    if swept > 0 {
        eprintln!("removed {swept} scratch directory(ies) left by workers no longer running");
    }
    let shutdown = Shutdown::default();
    install_signals(&shutdown);
    if let Some(url) = args.database_url {
        let id = args.worker_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        // The database may not be up yet: retry transient failures until a signal.
        let url = Secret::new(url);
        let open = (|| PgQueue::open(url.clone(), &id, token.as_ref()))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(30))
                    .with_jitter()
                    .without_max_times(),
            )
            .sleep(tokio::time::sleep)
            .when(|e: &tendril::queue::QueueError| e.is_transient())
            .notify(|e, d| {
                progress(WorkerEvent::Retrying {
                    error: e.to_string(),
                    delay: d,
                })
            });
        let queue = tokio::select! {
            q = open => q?,
            _ = shutdown.drain.cancelled() => return Ok(()),
        };
        eprintln!("worker {id}: PostgreSQL queue");
        go(Arc::new(queue), runner, config, shutdown, progress).await
    } else if let Some(url) = args.trellis_url {
        let (Some(id), Some(token)) = (args.worker_id, token) else {
            return Err(CmdError::Usage(
                "Trellis mode needs a worker id and token: set GRAPE_WORKER_ID and GRAPE_WORKER_TOKEN \
                 (or pass --worker-id and --worker-token)"
                    .into(),
            ));
        };
        let client = TrellisClient::new(TrellisConfig {
            url,
            worker_id: id.clone(),
            token,
            request_timeout: Duration::from_secs(30),
        })?;
        eprintln!("worker {id}: Trellis at {}", client.base_url());
        go(Arc::new(client), runner, config, shutdown, progress).await
    } else {
        Err(CmdError::Usage(
            "no queue: set TRELLIS_URL (or --trellis-url) for the control plane, \
             or pass --database-url for a PostgreSQL queue"
                .into(),
        ))
    }
}

async fn go<Q: JobQueue>(
    queue: Arc<Q>,
    runner: Arc<ProcessRunner>,
    config: WorkerConfig,
    shutdown: Shutdown,
    progress: Progress,
) -> Result<(), CmdError> {
    let summary = run_worker(queue, runner, config, shutdown, progress).await?;
    eprintln!(
        "{} job(s): {} succeeded, {} failed, {} cancelled",
        summary.jobs, summary.succeeded, summary.failed, summary.cancelled
    );
    Ok(())
}
