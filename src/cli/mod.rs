//! Subcommands of the `tendril` binary, one file each, plus what they share.

pub mod apply;
pub mod chart;
pub mod deploy;
pub mod finalize;
pub mod kubeconfig;
pub mod plan;
pub mod progress;
pub mod render;
pub mod token;
pub mod worker;

use std::error::Error;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Logs go to stderr; `TENDRIL_LOG` (or `RUST_LOG`) sets the filter, `warn` by default.
pub fn init_tracing() {
    let filter = std::env::var("TENDRIL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
    eprintln!("cancelling: interrupting terraform and waiting for it to write its state…");
    token.cancel();
}
