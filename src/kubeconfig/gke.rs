//! GKE: the bearer token is a GCP access token for the cloud-platform scope.

pub use crate::cloud::gcp::{GcpCredentialSource, GcpTokenSource};

/// The arguments of the exec plugin a kubeconfig for a GKE cluster runs.
pub fn exec_args() -> Vec<String> {
    vec!["token".into(), "gke".into()]
}
