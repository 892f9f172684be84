//! `tendril kubeconfig`.

use std::process::ExitCode;

/// Flags of `tendril kubeconfig`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril kubeconfig`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("kubeconfig")
}
