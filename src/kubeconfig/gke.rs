//! GKE: the bearer token is a GCP access token for the cloud-platform scope.

use super::TokenOptions;
use crate::cloud::CloudError;
pub use crate::cloud::gcp::{GcpCredentialSource, GcpTokenSource};

/// A token source for GKE clusters.
pub fn token_source(source: GcpCredentialSource) -> Result<GcpTokenSource, CloudError> {
    GcpTokenSource::new(source)
}

/// The credential of a command without a job: `options.gcp_credentials`,
/// else `GOOGLE_APPLICATION_CREDENTIALS`.
pub fn session(options: &TokenOptions) -> Result<GcpCredentialSource, CloudError> {
    GcpCredentialSource::from_env(options.gcp_credentials.as_deref())
}

/// The arguments of the exec plugin a kubeconfig for a GKE cluster runs
/// (`tendril token gke [--credentials FILE]`).
pub fn exec_args(options: &TokenOptions) -> Vec<String> {
    let mut args = vec!["token".into(), "gke".into()];
    if let Some(c) = &options.gcp_credentials {
        args.extend(["--credentials".into(), c.display().to_string()]);
    }
    args
}
