//! GKE: the bearer token is a GCP access token for the cloud-platform scope.

pub use crate::cloud::gcp::{GcpCredentialSource, GcpTokenSource};
