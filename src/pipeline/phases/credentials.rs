//! The credentials phase: turns a job's `cloud_identity` into cloud
//! credentials for tendril itself (cluster tokens) and the environment of
//! the terraform child.
//!
//! | provider | tendril uses | terraform gets |
//! | --- | --- | --- |
//! | `aws` | the standard chain, then STS AssumeRole (`role_arn`, `external_id`, session `tendril-<job id>`), refreshed before expiry | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` |
//! | `gcp` | workload identity federation built from `wif_config` (or `GOOGLE_APPLICATION_CREDENTIALS`) | `GOOGLE_OAUTH_ACCESS_TOKEN` |
//! | `azure` | federated token (`AZURE_FEDERATED_TOKEN_FILE`) or client secret (`AZURE_CLIENT_SECRET`) | `ARM_TENANT_ID`, `ARM_CLIENT_ID`, `ARM_SUBSCRIPTION_ID`, and `ARM_USE_OIDC` + `ARM_OIDC_TOKEN_FILE_PATH` or `ARM_CLIENT_SECRET` |
//! | `local` | nothing | the cloud SDK variables of tendril's own environment |

use std::path::PathBuf;

use serde_json::json;

use crate::Secret;
use crate::cloud::CloudError;
use crate::cloud::aws::{AwsCredentials, AwsOptions, AwsRole};
use crate::cloud::azure::{AzureCredential, AzureIdentity};
use crate::cloud::gcp::{GcpCredentialSource, GcpTokenSource};
use crate::job::{CloudIdentity, JobFile, VineConfig};

/// Variables for a terraform child, secret values wrapped.
pub type ChildEnv = Vec<(String, Secret<String>)>;

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
    /// What tendril itself holds, for cluster tokens.
    pub session: CloudSession,
}

/// The cloud credentials tendril holds for a job, one variant per provider.
#[derive(Clone)]
pub enum CloudSession {
    /// Cloud identity `local`: none (clusters need a kubeconfig).
    Local,
    /// AWS credentials (refreshing), for EKS tokens and DescribeCluster.
    Aws(AwsCredentials),
    /// GCP credential source, for GKE tokens.
    Gcp(GcpCredentialSource),
    /// Azure identity, for AKS tokens.
    Azure(AzureIdentity),
}

impl CloudSession {
    /// The provider's name (`local`, `aws`, `gcp`, `azure`).
    pub fn provider(&self) -> &'static str {
        match self {
            CloudSession::Local => "local",
            CloudSession::Aws(_) => "aws",
            CloudSession::Gcp(_) => "gcp",
            CloudSession::Azure(_) => "azure",
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
            .field("session", &self.session.provider())
            .finish()
    }
}

/// The credentials phase: assumes the job's cloud identity (AWS in the
/// vine's region).
pub async fn assume(job: &JobFile, vine: &VineConfig) -> Result<JobCredentials, CloudError> {
    let region = Some(vine.region.clone());
    match &job.cloud_identity {
        CloudIdentity::Local => Ok(JobCredentials {
            child_env: local_child_env(),
            session: CloudSession::Local,
        }),
        CloudIdentity::Aws {
            role_arn,
            external_id,
        } => {
            let options = AwsOptions {
                region,
                ..AwsOptions::default()
            };
            let base = AwsCredentials::from_environment(&options).await?;
            let role = AwsRole::for_job(role_arn, external_id.clone(), &job.job.id.0)?;
            let assumed = base.assume_role(&role, &options).await?;
            let child_env = assumed.child_env().await?;
            Ok(JobCredentials {
                child_env,
                session: CloudSession::Aws(assumed),
            })
        }
        CloudIdentity::Gcp {
            service_account_email,
            wif_config,
            ..
        } => {
            let source = match wif_config {
                Some(wif) => {
                    let mut doc = json!({
                        "type": "external_account",
                        "audience": wif.audience.clone().unwrap_or_else(|| format!(
                            "//iam.googleapis.com/projects/-/locations/global/workloadIdentityPools/{}/providers/{}",
                            wif.pool_id.clone().unwrap_or_default(),
                            wif.provider_id.clone().unwrap_or_default()
                        )),
                        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                    });
                    for (k, v) in &wif.extra {
                        doc[k] = v.clone();
                    }
                    if let Some(email) = service_account_email {
                        doc["service_account_impersonation_url"] = json!(format!(
                            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
                        ));
                    }
                    GcpCredentialSource::from_json(&doc.to_string())?
                }
                None => {
                    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").ok_or_else(|| {
                        CloudError::InvalidInput {
                            input: "cloud_identity.wif_config".into(),
                            reason: "is missing and GOOGLE_APPLICATION_CREDENTIALS is not set; give one of them".into(),
                        }
                    })?;
                    GcpCredentialSource::from_file(&PathBuf::from(path))?
                }
            };
            let token = GcpTokenSource::new(source.clone())?.fetch_token().await?;
            Ok(JobCredentials {
                child_env: vec![("GOOGLE_OAUTH_ACCESS_TOKEN".into(), token.token)],
                session: CloudSession::Gcp(source),
            })
        }
        CloudIdentity::Azure {
            tenant_id,
            client_id,
            subscription_id,
        } => {
            let mut child_env: ChildEnv = vec![
                ("ARM_TENANT_ID".into(), Secret::new(tenant_id.clone())),
                ("ARM_CLIENT_ID".into(), Secret::new(client_id.clone())),
                (
                    "ARM_SUBSCRIPTION_ID".into(),
                    Secret::new(subscription_id.clone()),
                ),
            ];
            let credential = if let Some(file) = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE") {
                let file = PathBuf::from(file);
                child_env.push(("ARM_USE_OIDC".into(), Secret::new("true".into())));
                child_env.push((
                    "ARM_OIDC_TOKEN_FILE_PATH".into(),
                    Secret::new(file.display().to_string()),
                ));
                AzureCredential::FederatedTokenFile(file)
            } else if let Ok(secret) = std::env::var("AZURE_CLIENT_SECRET") {
                child_env.push(("ARM_CLIENT_SECRET".into(), Secret::new(secret.clone())));
                AzureCredential::ClientSecret(Secret::new(secret))
            } else {
                return Err(CloudError::InvalidInput {
                    input: "cloud_identity (azure)".into(),
                    reason: "neither AZURE_FEDERATED_TOKEN_FILE (workload identity) nor AZURE_CLIENT_SECRET is set; give tendril one of them".into(),
                });
            };
            let identity = AzureIdentity {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                credential,
                authority_host: std::env::var("AZURE_AUTHORITY_HOST").ok(),
            };
            Ok(JobCredentials {
                child_env,
                session: CloudSession::Azure(identity),
            })
        }
    }
}
