//! The credentials phase: turns a job's `cloud_identity` into cloud
//! credentials for tendril itself (cluster tokens) and the environment of
//! the terraform child. Each provider's rules live in `cloud/<provider>.rs`;
//! this phase only turns the job's identity into that provider's inputs.
//!
//! | provider | tendril uses | terraform gets |
//! | --- | --- | --- |
//! | `aws` | the standard chain, then STS AssumeRole (`role_arn`, `external_id`, session `tendril-<job id>`), refreshed before expiry | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` |
//! | `gcp` | workload identity federation built from `wif_config` (or `GOOGLE_APPLICATION_CREDENTIALS`) | `GOOGLE_OAUTH_ACCESS_TOKEN` |
//! | `azure` | federated token (`AZURE_FEDERATED_TOKEN_FILE`) or client secret (`AZURE_CLIENT_SECRET`) | `ARM_TENANT_ID`, `ARM_CLIENT_ID`, `ARM_SUBSCRIPTION_ID`, and `ARM_USE_OIDC` + `ARM_OIDC_TOKEN_FILE_PATH` or `ARM_CLIENT_SECRET` |
//! | `local` | nothing | the cloud SDK variables of tendril's own environment |

use crate::Secret;
use crate::cloud::aws::{self, AwsOptions, AwsRole};
use crate::cloud::gcp::{self, GcpIdentity};
use crate::cloud::{Assumed, ChildEnv, CloudError, Session, azure};
use crate::job::{CloudIdentity, JobFile, VineConfig};

/// Variables from tendril's environment that a `local` job passes to
/// terraform: cloud SDK settings (`AWS_*`, `GOOGLE_*`, `CLOUDSDK_*`, `ARM_*`,
/// `AZURE_*`). `TF_*` variables are never passed.
pub fn local_child_env() -> ChildEnv {
    const PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "CLOUDSDK_", "ARM_", "AZURE_"];
    let mut vars: ChildEnv = std::env::vars()
        .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// What the credentials phase produced. Dropped at the end of the job.
pub struct JobCredentials {
    /// Variables for the terraform child.
    pub child_env: ChildEnv,
    /// What tendril itself holds, for cluster tokens; `None` for cloud
    /// identity `local` (clusters then need a kubeconfig).
    pub session: Option<Session>,
}

impl<S: Into<Session>> From<Assumed<S>> for JobCredentials {
    fn from(a: Assumed<S>) -> Self {
        JobCredentials {
            child_env: a.child_env,
            session: Some(a.session.into()),
        }
    }
}

impl std::fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCredentials")
            .field(
                "child_env",
                &self.child_env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field(
                "session",
                &self
                    .session
                    .as_ref()
                    .map_or("local", |s| s.provider().as_str()),
            )
            .finish()
    }
}

/// The credentials phase: assumes the job's cloud identity (AWS in the
/// vine's region).
pub async fn assume(job: &JobFile, vine: &VineConfig) -> Result<JobCredentials, CloudError> {
    Ok(match &job.cloud_identity {
        CloudIdentity::Local => JobCredentials {
            child_env: local_child_env(),
            session: None,
        },
        CloudIdentity::Aws {
            role_arn,
            external_id,
        } => {
            let role = AwsRole::for_job(role_arn, external_id.clone(), &job.job.id.0)?;
            let options = AwsOptions {
                region: Some(vine.region.clone()),
                ..AwsOptions::default()
            };
            aws::assume(&role, &options).await?.into()
        }
        CloudIdentity::Gcp {
            service_account_email,
            wif_config,
            ..
        } => {
            let identity = match wif_config {
                Some(wif) => GcpIdentity::Federated {
                    audience: wif.audience.clone().unwrap_or_else(|| {
                        gcp::pool_audience(
                            wif.pool_id.as_deref().unwrap_or_default(),
                            wif.provider_id.as_deref().unwrap_or_default(),
                        )
                    }),
                    config: wif.extra.clone(),
                    service_account_email: service_account_email.clone(),
                },
                None => GcpIdentity::ApplicationDefault,
            };
            gcp::assume(&identity).await?.into()
        }
        CloudIdentity::Azure {
            tenant_id,
            client_id,
            subscription_id,
        } => azure::assume(tenant_id, client_id, subscription_id)?.into(),
    })
}
