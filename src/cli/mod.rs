//! Subcommands of the `tendril` binary, one file each, plus what they share.

pub mod apply;
pub mod chart;
pub mod completion;
pub mod deploy;
pub mod destroy;
pub mod finalize;
pub mod format;
pub mod job;
pub mod kubeconfig;
pub mod man;
pub mod plan;
pub mod progress;
pub mod render;
pub mod token;
pub mod version;
pub mod worker;

use std::error::Error;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// `--log-format`: how log lines look on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, colours only when stderr is a terminal (and
    /// `NO_COLOR` is unset).
    #[default]
    Text,
    /// One JSON object per event, with the current span and the spans it is in
    /// (`job`, `phase`), for log shippers.
    Json,
}

/// Upper bounds on crates whose trace events carry secrets, applied over any
/// filter: aws-sigv4 traces the canonical request of a presigned URL (the EKS
/// token), session token included.
const SECRET_BEARING_TARGETS: &[&str] = &["aws_sigv4=debug"];

/// Logs go to stderr; `TENDRIL_LOG` (or `RUST_LOG`) sets the filter, `warn` by default.
pub fn init_tracing(format: LogFormat) {
    let filter = std::env::var("TENDRIL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_string());
    let filter = SECRET_BEARING_TARGETS
        .iter()
        .filter_map(|d| d.parse().ok())
        .fold(tracing_subscriber::EnvFilter::new(filter), |f, d| {
            f.add_directive(d)
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// A tokio runtime for the commands that need one (render does not).
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    }
}

/// Prints an error and its chain of causes to stderr and returns exit code 1.
pub fn fail(err: &(dyn Error + 'static)) -> ExitCode {
    eprintln!("error: {}", tendril::errors::chain_lines(err));
    ExitCode::FAILURE
}

/// SIGINT and SIGTERM handlers, installed before the job starts so that no
/// early signal is lost.
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }
}

/// Waits for a signal (forever when its handler could not be installed).
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken, signals: Signals) {
    #[cfg(unix)]
    {
        let Signals {
            mut interrupt,
            mut terminate,
        } = signals;
        tokio::select! {
            _ = recv(interrupt.as_mut()) => {}
            _ = recv(terminate.as_mut()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
    use std::io::Write as _;
    // after the cancel: a broken stderr must not stop it
    let _ = writeln!(
        std::io::stderr(),
        "cancelling: interrupting terraform and waiting for it to write its state…"
    );
}
