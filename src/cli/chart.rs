//! `tendril chart`: chart utilities.

use std::path::PathBuf;
use std::process::ExitCode;

use sha2::Digest as _;

use super::format::OutputFormat;

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
        #[arg(long, value_name = "FILE")]
        output_file: PathBuf,
        /// Output format: `json` or `yaml` print the file, size and digest on stdout.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// What `tendril chart package -o json|yaml` prints.
#[derive(serde::Serialize)]
struct Packaged {
    file: PathBuf,
    bytes: usize,
    sha256: String,
}

/// Runs `tendril chart`.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Package {
            dir,
            output_file,
            output,
        } => {
            let bytes = match tendril::chart::package_dir(&dir) {
                Ok(b) => b,
                Err(e) => return super::fail(&e),
            };
            if let Err(e) =
                tendril::outfile::write(&output_file, &bytes, tendril::outfile::Mode::Public)
            {
                return super::fail(&e);
            }
            let packaged = Packaged {
                file: output_file,
                bytes: bytes.len(),
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            };
            eprintln!(
                "wrote {} ({} bytes, sha256 {})",
                packaged.file.display(),
                packaged.bytes,
                packaged.sha256
            );
            match output.print(&packaged) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => super::fail(&e),
            }
        }
    }
}
