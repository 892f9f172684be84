//! Azure: federated client credentials (workload identity) and client secrets → Azure AD token.
//!
//! Both use the OAuth2 client-credentials grant at
//! `<authority>/<tenant>/oauth2/v2.0/token`. A federated credential sends the
//! token in `AZURE_FEDERATED_TOKEN_FILE` (re-read on every request, since the
//! kubelet rotates it) as a `client_assertion` of type
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`; a client secret
//! sends `client_secret`. The scope is `<resource>/.default`.

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::http::{client, send_json};
use super::{AccessToken, CloudError, TokenSource};
use crate::Secret;

/// The public cloud's authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The client assertion type for federated credentials.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the app proves who it is.
#[derive(Clone, Debug)]
pub enum AzureCredential {
    /// A file holding a federated token (workload identity).
    FederatedTokenFile(PathBuf),
    /// A client secret.
    ClientSecret(Secret<String>),
}

impl AzureCredential {
    /// The credential the environment gives: `AZURE_FEDERATED_TOKEN_FILE`
    /// (workload identity) first, else `AZURE_CLIENT_SECRET`.
    pub fn from_env() -> Result<Self, CloudError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (
            env("AZURE_FEDERATED_TOKEN_FILE"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            (Some(file), _) => Ok(AzureCredential::FederatedTokenFile(file.into())),
            (None, Some(secret)) => Ok(AzureCredential::ClientSecret(secret.into())),
            _ => Err(CloudError::NoCredentials {
                provider: "azure",
                hint: "set AZURE_FEDERATED_TOKEN_FILE (workload identity) or AZURE_CLIENT_SECRET"
                    .into(),
            }),
        }
    }
}

/// An Azure identity: tenant, client and credential.
#[derive(Clone, Debug)]
pub struct AzureIdentity {
    /// The Entra tenant ID (GUID or domain).
    pub tenant_id: String,
    /// The app registration / managed identity client ID.
    pub client_id: String,
    /// The credential.
    pub credential: AzureCredential,
    /// Another authority host (sovereign clouds, tests); default [`DEFAULT_AUTHORITY_HOST`].
    pub authority_host: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Secret<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl AzureIdentity {
    /// The token endpoint for this tenant.
    pub fn token_url(&self) -> String {
        let host = self
            .authority_host
            .as_deref()
            .unwrap_or(DEFAULT_AUTHORITY_HOST);
        format!(
            "{}/{}/oauth2/v2.0/token",
            host.trim_end_matches('/'),
            self.tenant_id
        )
    }

    /// An Azure AD token for `scope` (e.g. `<app id>/.default`).
    pub async fn token(&self, scope: &str) -> Result<AccessToken, CloudError> {
        if !valid_id(&self.tenant_id) {
            return Err(CloudError::InvalidInput {
                input: "tenant_id".into(),
                reason: format!(
                    "`{}` is not a tenant ID (a GUID or a domain)",
                    self.tenant_id
                ),
            });
        }
        if !valid_id(&self.client_id) {
            return Err(CloudError::InvalidInput {
                input: "client_id".into(),
                reason: format!("`{}` is not a client ID (a GUID)", self.client_id),
            });
        }
        let secret: Secret<String>;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", scope),
        ];
        match &self.credential {
            AzureCredential::FederatedTokenFile(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CloudError::ReadFile {
                        what: "Azure federated token file",
                        path: path.display().to_string(),
                        source,
                    })?;
                secret = Secret::new(text.trim().to_string());
                if secret.expose().is_empty() {
                    return Err(CloudError::InvalidInput {
                        input: format!("Azure federated token file `{}`", path.display()),
                        reason: "the file is empty".into(),
                    });
                }
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
                form.push(("client_assertion", secret.expose()));
            }
            AzureCredential::ClientSecret(s) => form.push(("client_secret", s.expose())),
        }
        let url = self.token_url();
        let answer: TokenAnswer = send_json(
            "Azure AD",
            &format!(
                "client credentials for {} in tenant {} (scope {scope})",
                self.client_id, self.tenant_id
            ),
            &url,
            client("Azure AD")?.post(&url).form(&form),
        )
        .await?;
        // Azure AD v2 answers a number; some endpoints a string of digits
        let expires_in = answer.expires_in.as_ref().and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        Ok(super::gcp::expiring_in(answer.access_token, expires_in))
    }
}

/// A [`TokenSource`] of Azure AD tokens for one scope.
#[derive(Clone, Debug)]
pub struct AzureTokenSource {
    identity: AzureIdentity,
    scope: String,
}

impl AzureTokenSource {
    /// Tokens for `scope`.
    pub fn new(identity: AzureIdentity, scope: &str) -> Self {
        AzureTokenSource {
            identity,
            scope: scope.to_string(),
        }
    }
}

impl TokenSource for AzureTokenSource {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        Box::pin(self.identity.token(&self.scope))
    }
}
