//! `tendril apply`.

use std::process::ExitCode;

/// Flags of `tendril apply`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril apply`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("apply")
}
