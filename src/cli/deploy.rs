//! `tendril deploy`.

use std::process::ExitCode;

/// Flags of `tendril deploy`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril deploy`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("deploy")
}
