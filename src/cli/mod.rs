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
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    }
}

/// Prints an error and its chain of causes to stderr and returns exit code 1.
pub fn fail(err: &dyn Error) -> ExitCode {
    let mut msg = format!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        source = cause.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}

/// The placeholder of a command that is not built yet.
pub fn not_yet(command: &str) -> ExitCode {
    eprintln!("error: `tendril {command}` is not available in this build yet");
    ExitCode::from(2)
}
