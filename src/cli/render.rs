//! `tendril render`.

use std::process::ExitCode;

/// Flags of `tendril render`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `tendril render`.
pub fn run(_args: Args) -> ExitCode {
    super::not_yet("render")
}
