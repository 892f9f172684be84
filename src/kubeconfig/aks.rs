//! AKS: the bearer token is an Azure AD token for the AKS server application.

use crate::cloud::azure::{AzureIdentity, AzureTokenSource};

/// The AKS AAD server application (the same ID in every tenant).
pub const AKS_SERVER_APP_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// The scope of AKS tokens.
pub const AKS_SCOPE: &str = "6dae42f8-4368-4678-94ff-3960e28e3630/.default";

/// A token source for AKS clusters with Entra ID (AAD) integration.
pub fn token_source(identity: AzureIdentity) -> AzureTokenSource {
    AzureTokenSource::new(identity, AKS_SCOPE)
}
