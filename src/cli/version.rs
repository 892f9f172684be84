//! `tendril version`: the build's version, git commit and target.

use std::process::ExitCode;

use serde::Serialize;

use super::format::OutputFormat;

/// The commit this binary was built from (build.rs: `TENDRIL_GIT_COMMIT`,
/// else `git rev-parse HEAD`, else `unknown`).
pub const GIT_COMMIT: &str = env!("TENDRIL_GIT_COMMIT");
/// The target triple this binary was built for.
pub const TARGET: &str = env!("TENDRIL_TARGET");
/// What `tendril --version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TENDRIL_GIT_COMMIT"),
    ", ",
    env!("TENDRIL_TARGET"),
    ")"
);

/// Flags of `tendril version`.
#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// What `tendril version -o json|yaml` prints.
#[derive(Debug, Serialize)]
pub struct Version {
    /// The crate version, e.g. `0.1.0`.
    pub version: &'static str,
    /// The git commit (`-dirty` when the tree had changes), or `unknown`.
    pub git_commit: &'static str,
    /// The target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: &'static str,
}

/// This build's version.
pub fn this_build() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: GIT_COMMIT,
        target: TARGET,
    }
}

/// Runs `tendril version`.
pub fn run(args: Args) -> ExitCode {
    let version = this_build();
    if args.output == OutputFormat::Text {
        println!("tendril {LONG_VERSION}");
        return ExitCode::SUCCESS;
    }
    match args.output.print(&version) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
