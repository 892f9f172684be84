//! `tendril worker`.

use std::process::ExitCode;

/// Flags of `tendril worker`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril worker`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("worker")
}
