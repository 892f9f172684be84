//! `tendril plan`.

use std::process::ExitCode;

/// Flags of `tendril plan`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril plan`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("plan")
}
