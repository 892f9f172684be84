//! The phases more than one job type runs, written once.
//!
//! - [`preflight`]: every input checked before anything changes (per job type).
//! - [`credentials`]: the job's cloud identity assumed.
//! - [`terraform`]: the scratch workspace, `terraform init`, apply, destroy
//!   and outputs.
//! - [`cluster`]: infrastructure facts from the outputs, and the kube client
//!   built natively from them.
//! - [`output`]: files written into the run's output directory.
//! - [`planned`]: the outputs a dry run can know from the saved plan.

pub mod cluster;
pub mod credentials;
pub mod output;
pub mod planned;
pub mod preflight;
pub mod terraform;

use crate::artifact::{ArtifactError, S3Credentials, Store};
use crate::cloud::ChildEnv;
use crate::job::JobFile;

/// The artifact store of a job (PLAN uploads to it, DEPLOY downloads from
/// it). S3 stores sign with the AWS credentials in `child_env`, else those
/// in tendril's environment.
pub fn artifact_store(job: &JobFile, child_env: &ChildEnv) -> Result<Store, ArtifactError> {
    let creds = S3Credentials::from_vars(child_env).or_else(S3Credentials::from_env);
    Store::from_config(&job.tendril.artifacts, creds)
}
