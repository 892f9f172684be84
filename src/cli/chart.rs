//! `tendril chart`: chart utilities.

use std::path::PathBuf;
use std::process::ExitCode;

use sha2::Digest as _;

/// Flags of `tendril chart`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Pack a chart directory into a reproducible .tgz (sorted entries, fixed
    /// mtime, owner and mode): the same files always give the same bytes.
    Package {
        /// The chart directory (holding Chart.yaml).
        dir: PathBuf,
        /// The archive to write (atomically).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Runs `tendril chart`.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Package { dir, output } => {
            let bytes = match tendril::chart::package_dir(&dir) {
                Ok(b) => b,
                Err(e) => return super::fail(&e),
            };
            if let Err(e) = tendril::outfile::write(&output, &bytes, tendril::outfile::Mode::Public)
            {
                return super::fail(&e);
            }
            eprintln!(
                "wrote {} ({} bytes, sha256 {})",
                output.display(),
                bytes.len(),
                hex::encode(sha2::Sha256::digest(&bytes))
            );
            ExitCode::SUCCESS
        }
    }
}
