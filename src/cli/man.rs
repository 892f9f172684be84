//! `tendril man`: the manual page (roff), generated from the command line itself.

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `tendril man`.
#[derive(clap::Args)]
pub struct Args {
    /// Write one page per command (tendril.1, tendril-deploy.1, ...) into
    /// this directory instead of printing tendril.1 on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Runs `tendril man` for the command line `command`.
pub fn run(args: Args, command: clap::Command) -> ExitCode {
    let result = match &args.out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| format!("cannot write the manual pages into {}: {e}", dir.display())),
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .map_err(|e| format!("cannot write to stdout: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
