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
use super::{AccessToken, Assumed, ChildEnv, CloudError, OutputDefaults, TokenSource};
use crate::Secret;

/// The names Azure goes by (`Provider::Azure`).
pub const NAMES: &[&str] = &["azure", "azurerm", "aks"];

/// The output names of common Azure modules (AKS, PostgreSQL flexible
/// server, Azure Cache for Redis, Azure DNS). AKS clusters need the endpoint
/// and CA outputs.
pub const OUTPUTS: OutputDefaults = OutputDefaults {
    cluster_name: "aks_cluster_name",
    cluster_endpoint: "aks_cluster_host",
    cluster_id: "aks_cluster_id",
    cluster_ca: "aks_cluster_ca_certificate",
    region: "location",
    network_id: "vnet_id",
    database_name: "postgresql_database_name",
    database_writer_endpoint: "postgresql_server_fqdn",
    database_reader_endpoint: "postgresql_replica_fqdn",
    database_secret: "postgresql_credentials_secret_name",
    cache_primary_endpoint: "redis_hostname",
    cache_reader_endpoint: "redis_replica_hostname",
    dns_zone: "dns_zone_name",
    dns_domain: "domain_name",
    endpoint_lookup: false,
};

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Assumes a job's Azure identity: the credential the environment gives
/// ([`AzureCredential::from_env`]) for `client_id` in `tenant_id`. The
/// terraform child gets `ARM_TENANT_ID`, `ARM_CLIENT_ID`,
/// `ARM_SUBSCRIPTION_ID` and the credential ([`AzureCredential::child_env`]).
/// Nothing is sent to Azure AD yet.
pub fn assume(
    tenant_id: &str,
    client_id: &str,
    subscription_id: &str,
) -> Result<Assumed<AzureIdentity>, CloudError> {
    let session = AzureIdentity::from_env(Some(tenant_id), Some(client_id))?;
    let mut child_env: ChildEnv = vec![
        ("ARM_TENANT_ID".into(), Secret::new(tenant_id.to_string())),
        ("ARM_CLIENT_ID".into(), Secret::new(client_id.to_string())),
        (
            "ARM_SUBSCRIPTION_ID".into(),
            Secret::new(subscription_id.to_string()),
        ),
    ];
    child_env.extend(session.credential.child_env());
    Ok(Assumed { session, child_env })
}

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
    /// The one rule for choosing a credential: a federated token file
    /// (workload identity) first, else a client secret; empty values count
    /// as absent.
    pub fn choose(
        federated_token_file: Option<PathBuf>,
        client_secret: Option<Secret<String>>,
    ) -> Option<Self> {
        federated_token_file
            .filter(|f| !f.as_os_str().is_empty())
            .map(AzureCredential::FederatedTokenFile)
            .or_else(|| {
                client_secret
                    .filter(|s| !s.expose().is_empty())
                    .map(AzureCredential::ClientSecret)
            })
    }

    /// The credential the environment gives, by [`AzureCredential::choose`]:
    /// `AZURE_FEDERATED_TOKEN_FILE`, else `AZURE_CLIENT_SECRET`.
    pub fn from_env() -> Result<Self, CloudError> {
        Self::choose(
            env_nonempty("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            env_nonempty("AZURE_CLIENT_SECRET").map(Secret::new),
        )
        .ok_or_else(|| CloudError::NoCredentials {
            provider: "azure",
            hint: "set AZURE_FEDERATED_TOKEN_FILE (workload identity) or AZURE_CLIENT_SECRET"
                .into(),
        })
    }

    /// The variables that give this credential to the azurerm provider:
    /// `ARM_USE_OIDC` and `ARM_OIDC_TOKEN_FILE_PATH`, or `ARM_CLIENT_SECRET`.
    pub fn child_env(&self) -> ChildEnv {
        match self {
            AzureCredential::FederatedTokenFile(file) => vec![
                ("ARM_USE_OIDC".into(), Secret::new("true".into())),
                (
                    "ARM_OIDC_TOKEN_FILE_PATH".into(),
                    Secret::new(file.display().to_string()),
                ),
            ],
            AzureCredential::ClientSecret(secret) => {
                vec![("ARM_CLIENT_SECRET".into(), secret.clone())]
            }
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
    /// An identity from the environment: `tenant_id` and `client_id` when
    /// given, else `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`; the credential
    /// from [`AzureCredential::from_env`]; `AZURE_AUTHORITY_HOST` when set.
    pub fn from_env(tenant_id: Option<&str>, client_id: Option<&str>) -> Result<Self, CloudError> {
        let given = |value: Option<&str>, var: &str| {
            value
                .map(str::to_string)
                .or_else(|| env_nonempty(var))
                .ok_or_else(|| CloudError::NoCredentials {
                    provider: "azure",
                    hint: format!("set {var}"),
                })
        };
        Ok(AzureIdentity {
            tenant_id: given(tenant_id, "AZURE_TENANT_ID")?,
            client_id: given(client_id, "AZURE_CLIENT_ID")?,
            credential: AzureCredential::from_env()?,
            authority_host: env_nonempty("AZURE_AUTHORITY_HOST"),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_federated_token_file_wins_and_empty_values_do_not_count() {
        let file = || Some(PathBuf::from("/var/run/token"));
        let secret = || Some(Secret::new("s3cret".to_string()));
        assert!(matches!(
            AzureCredential::choose(file(), secret()),
            Some(AzureCredential::FederatedTokenFile(f)) if f == Path::new("/var/run/token")
        ));
        assert!(matches!(
            AzureCredential::choose(Some(PathBuf::new()), secret()),
            Some(AzureCredential::ClientSecret(_))
        ));
        assert!(AzureCredential::choose(None, Some(Secret::new(String::new()))).is_none());

        let env = AzureCredential::choose(file(), None).unwrap().child_env();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["ARM_USE_OIDC", "ARM_OIDC_TOKEN_FILE_PATH"]);
        assert_eq!(env[1].1.expose(), "/var/run/token");
        let env = AzureCredential::choose(None, secret()).unwrap().child_env();
        assert_eq!(env[0].0, "ARM_CLIENT_SECRET");
        assert_eq!(env[0].1.expose(), "s3cret");
    }
}
