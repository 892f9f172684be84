//! The `tendril` command: a thin layer over the `tendril` library.
//!
//! Each subcommand lives in its own file under `src/cli/`, parses its flags
//! with clap, calls the library, and maps the outcome to an exit code.
//! Human progress goes to stderr; machine-readable results to stdout.

mod cli;

/// mimalloc instead of the system allocator: a render allocates and frees
/// hundreds of thousands of small values on two threads, and glibc's malloc
/// spent a sixth of the instructions of `tendril render` (see docs/chart.md,
/// "Speed"). The library leaves the choice of allocator to its users.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory as _, Parser};
use std::process::ExitCode;

/// tendril: DEPLOY jobs for infrastructure platforms, with no helm, kubectl or cloud CLI.
#[derive(Parser)]
#[command(
    name = "tendril",
    version,
    long_version = cli::version::LONG_VERSION,
    about,
    propagate_version = true
)]
struct Tendril {
    /// Log format on stderr: `text` (colours only on a terminal) or `json`
    /// (one object per line, with the job and phase spans). The level comes
    /// from TENDRIL_LOG (or RUST_LOG), e.g. `debug`; default `warn`.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "TENDRIL_LOG_FORMAT"
    )]
    log_format: cli::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Render a chart (the embedded Argo CD chart by default) to multi-document YAML.
    Render(cli::render::Args),
    /// Chart utilities: package a chart directory into a reproducible archive.
    Chart(cli::chart::Args),
    /// Print a Kubernetes ExecCredential for a cluster (EKS, GKE, AKS).
    Token(cli::token::Args),
    /// Write a kubeconfig for a cluster from infrastructure facts.
    Kubeconfig(cli::kubeconfig::Args),
    /// Server-side apply manifests to a cluster, in stages, optionally waiting until ready.
    Apply(cli::apply::Args),
    /// Run a PLAN job: terraform plan, then store the plan artifact.
    Plan(cli::plan::Args),
    /// Run a DEPLOY job end to end.
    Deploy(cli::deploy::Args),
    /// Run a DESTROY job: tear down the cluster's own objects, then terraform destroy.
    Destroy(cli::destroy::Args),
    /// Run as a long-lived worker that claims and runs jobs.
    Worker(cli::worker::Args),
    /// Write a finished DEPLOY job's results into the platform database.
    Finalize(cli::finalize::Args),
    /// Print the version, git commit and target of this build.
    Version(cli::version::Args),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion(cli::completion::Args),
    /// Print the manual page (roff), or write one per command with --out-dir.
    Man(cli::man::Args),
}

fn main() -> ExitCode {
    let tendril = Tendril::parse();
    cli::init_tracing(tendril.log_format);
    match tendril.command {
        Command::Render(args) => cli::render::run(args),
        Command::Chart(args) => cli::chart::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Kubeconfig(args) => cli::kubeconfig::run(args),
        Command::Apply(args) => cli::apply::run(args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Deploy(args) => cli::deploy::run(args),
        Command::Destroy(args) => cli::destroy::run(args),
        Command::Worker(args) => cli::worker::run(args),
        Command::Finalize(args) => cli::finalize::run(args),
        Command::Version(args) => cli::version::run(args),
        Command::Completion(args) => cli::completion::run(args, Tendril::command()),
        Command::Man(args) => cli::man::run(args, Tendril::command()),
    }
}
