//! `tendril finalize`.

use std::process::ExitCode;

/// Flags of `tendril finalize`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril finalize`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("finalize")
}
