//! AKS: the bearer token is an Azure AD token for the AKS server application;
//! clusters with local accounts hand out a kubeconfig through the ARM API.

use base64::Engine;
use kube::config::Kubeconfig;
use serde::Deserialize;

use super::{KubeconfigError, TokenOptions};
use crate::cloud::CloudError;
use crate::cloud::azure::{AzureIdentity, AzureTokenSource};
use crate::cloud::http::{client, send_json};

/// The AKS AAD server application (the same ID in every tenant).
pub const AKS_SERVER_APP_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// The scope of AKS tokens.
pub const AKS_SCOPE: &str = "6dae42f8-4368-4678-94ff-3960e28e3630/.default";
/// The scope of Azure Resource Manager tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// The public cloud's ARM endpoint.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The managedClusters API version tendril calls.
pub const ARM_API_VERSION: &str = "2024-09-01";

/// A token source for AKS clusters with Entra ID (AAD) integration.
pub fn token_source(identity: AzureIdentity) -> AzureTokenSource {
    AzureTokenSource::new(identity, AKS_SCOPE)
}

/// The identity of a command without a job: tenant and client from
/// `options`, else the environment ([`AzureIdentity::from_env`]).
pub fn session(options: &TokenOptions) -> Result<AzureIdentity, CloudError> {
    AzureIdentity::from_env(options.tenant_id.as_deref(), options.client_id.as_deref())
}

/// Which local-account kubeconfig to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAccount {
    /// `listClusterUserCredential`.
    User,
    /// `listClusterAdminCredential`.
    Admin,
}

#[derive(Deserialize)]
struct CredentialResults {
    #[serde(default)]
    kubeconfigs: Vec<CredentialResult>,
}

#[derive(Deserialize)]
struct CredentialResult {
    value: crate::Secret<String>,
}

/// Fetches the cluster's user or admin kubeconfig through the ARM API (for
/// jobs that ask for local accounts). `cluster_id` is the managed cluster's
/// resource ID (`/subscriptions/…/managedClusters/<name>`).
pub async fn local_account_kubeconfig(
    identity: &AzureIdentity,
    cluster_id: &str,
    account: LocalAccount,
    arm_endpoint: Option<&str>,
) -> Result<Kubeconfig, KubeconfigError> {
    let lower = cluster_id.to_ascii_lowercase();
    if !lower.starts_with("/subscriptions/")
        || !lower.contains("/providers/microsoft.containerservice/managedclusters/")
    {
        return Err(KubeconfigError::BadFact {
            source_name: "the AKS cluster ID (fact `cluster_id`)".into(),
            reason: format!(
                "`{cluster_id}` is not a managed cluster resource ID \
                 (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>)"
            ),
        });
    }
    let token = identity.token(ARM_SCOPE).await?;
    let op = match account {
        LocalAccount::User => "listClusterUserCredential",
        LocalAccount::Admin => "listClusterAdminCredential",
    };
    let base = arm_endpoint
        .unwrap_or(DEFAULT_ARM_ENDPOINT)
        .trim_end_matches('/');
    let url = format!("{base}{cluster_id}/{op}?api-version={ARM_API_VERSION}");
    let http = client("Azure Resource Manager")?;
    let answer: CredentialResults = send_json(
        "Azure Resource Manager",
        &format!("{op} on {cluster_id}"),
        &url,
        http.post(&url)
            .bearer_auth(token.token.expose())
            .header("content-length", "0"),
    )
    .await?;
    let bad = |reason: String| KubeconfigError::Kubeconfig {
        path: format!("(ARM {op} answer)").into(),
        reason,
    };
    let first = answer.kubeconfigs.first().ok_or_else(|| {
        bad("the answer holds no kubeconfig; are local accounts disabled on the cluster?".into())
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(first.value.expose().as_bytes())
        .map_err(|e| bad(format!("the kubeconfig is not base64 ({e})")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("the kubeconfig is not UTF-8".into()))?;
    Kubeconfig::from_yaml(&text).map_err(|e| bad(format!("not a valid kubeconfig ({e})")))
}

/// The arguments of the exec plugin a kubeconfig for an AKS cluster runs
/// (`tendril token aks [--tenant-id ID] [--client-id ID]`).
pub fn exec_args(options: &TokenOptions) -> Vec<String> {
    let mut args = vec!["token".into(), "aks".into()];
    if let Some(t) = &options.tenant_id {
        args.extend(["--tenant-id".into(), t.clone()]);
    }
    if let Some(c) = &options.client_id {
        args.extend(["--client-id".into(), c.clone()]);
    }
    args
}
