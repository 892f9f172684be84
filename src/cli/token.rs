//! `tendril token`.

use std::process::ExitCode;

/// Flags of `tendril token`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril token`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("token")
}
