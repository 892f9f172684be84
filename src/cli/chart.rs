//! `tendril chart`.

use std::process::ExitCode;

/// Flags of `tendril chart`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril chart`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("chart")
}
