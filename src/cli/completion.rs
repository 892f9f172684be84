//! `tendril completion SHELL`: a shell completion script on stdout.

use std::process::ExitCode;

/// Flags of `tendril completion`.
#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell. Load it with e.g.
    /// `source <(tendril completion bash)`.
    shell: clap_complete::Shell,
}

/// Runs `tendril completion` for the command line `command`.
pub fn run(args: Args, mut command: clap::Command) -> ExitCode {
    clap_complete::generate(
        args.shell,
        &mut command,
        "tendril",
        &mut std::io::stdout().lock(),
    );
    ExitCode::SUCCESS
}
