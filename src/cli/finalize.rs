//! `tendril finalize`: write a finished DEPLOY job's results into the platform database.

use std::process::ExitCode;
use tendril::Secret;
use tendril::queue::{QueueError, finalize, postgres};

/// Flags of `tendril finalize`.
#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL connection URL of the platform database (postgres://USER[:PASSWORD]@HOST[:PORT]/DB).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The DEPLOY job (provision_jobs.id) to finalize.
    #[arg(long)]
    job: String,
    /// Do not apply the schema migrations first (the schema must then be current).
    #[arg(long)]
    no_migrate: bool,
}

/// Runs `tendril finalize`.
pub fn run(args: Args) -> ExitCode {
    let rt = super::runtime();
    match rt.block_on(finalize_cmd(args)) {
        Ok(done) => {
            if done.superseded {
                eprintln!(
                    "job {}: a newer DEPLOY of vine {} was already finalized; nothing changed",
                    done.job_id, done.vine_id
                );
            } else {
                eprintln!(
                    "job {}: vine {} is {} ({} database(s), {} cache(s) written)",
                    done.job_id, done.vine_id, done.vine_status, done.databases, done.caches
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(&e),
    }
}

async fn finalize_cmd(args: Args) -> Result<finalize::Finalized, QueueError> {
    let url = Secret::new(args.database_url);
    let mut client = postgres::connect(&url).await?;
    if !args.no_migrate {
        postgres::migrate(&mut client).await?;
    }
    finalize::finalize_job(&mut client, args.job.trim()).await
}
