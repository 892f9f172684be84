//! GCP: workload identity federation and service-account keys → OAuth2 access token.
//!
//! Two credential files are understood, as Google's client libraries write them:
//!
//! - `"type": "service_account"`: a key file. tendril signs a JWT (RS256, the
//!   key's `private_key_id` as `kid`) asserting `iss` = the account's e-mail,
//!   `aud` = its `token_uri`, and the requested scope, and trades it at
//!   `token_uri` (grant `urn:ietf:params:oauth:grant-type:jwt-bearer`).
//! - `"type": "external_account"`: workload identity federation. The subject
//!   token is read from a file or a URL (text, or a JSON field), exchanged at
//!   Google STS (RFC 8693 token exchange) for a federated token, which is then
//!   optionally traded for a service account's token through
//!   `service_account_impersonation_url`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::Deserialize;

use super::http::{client, send_json};
use super::{AccessToken, Assumed, CloudError, OutputDefaults, TokenSource};
use crate::Secret;

/// The names Google Cloud goes by (`Provider::Gcp`).
pub const NAMES: &[&str] = &["gcp", "google", "gke"];

/// The output names of common Google Cloud modules (GKE, Cloud SQL,
/// Memorystore, Cloud DNS). GKE clusters need the endpoint and CA outputs.
pub const OUTPUTS: OutputDefaults = OutputDefaults {
    cluster_name: "gke_cluster_name",
    cluster_endpoint: "gke_cluster_endpoint",
    cluster_id: "gke_cluster_id",
    cluster_ca: "gke_cluster_ca_certificate",
    region: "region",
    network_id: "vpc_network_id",
    database_name: "cloudsql_database_name",
    database_writer_endpoint: "cloudsql_private_ip_address",
    database_reader_endpoint: "cloudsql_replica_private_ip_address",
    database_secret: "cloudsql_credentials_secret_id",
    cache_primary_endpoint: "memorystore_host",
    cache_reader_endpoint: "memorystore_read_endpoint",
    dns_zone: "dns_zone_name",
    dns_domain: "domain_name",
    endpoint_lookup: false,
};

/// Where a job's GCP credential comes from.
#[derive(Clone, Debug)]
pub enum GcpIdentity {
    /// Workload identity federation: an `external_account` configuration
    /// made of the pool provider's `audience`, the rest of the configuration
    /// (`credential_source`, ...) and the service account to impersonate.
    Federated {
        /// `//iam.googleapis.com/projects/…/providers/<provider>` (see [`pool_audience`]).
        audience: String,
        /// The other fields of the configuration, as given.
        config: BTreeMap<String, serde_json::Value>,
        /// The service account whose token tendril trades the federated one for.
        service_account_email: Option<String>,
    },
    /// The credential file `GOOGLE_APPLICATION_CREDENTIALS` names.
    ApplicationDefault,
}

/// The audience of a workload identity pool provider, from its pool and provider IDs.
pub fn pool_audience(pool_id: &str, provider_id: &str) -> String {
    format!(
        "//iam.googleapis.com/projects/-/locations/global/workloadIdentityPools/{pool_id}/providers/{provider_id}"
    )
}

impl GcpIdentity {
    /// The credential this identity stands for.
    pub fn credential(&self) -> Result<GcpCredentialSource, CloudError> {
        match self {
            GcpIdentity::Federated {
                audience,
                config,
                service_account_email,
            } => {
                let mut doc = serde_json::json!({
                    "type": "external_account",
                    "audience": audience,
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                });
                for (k, v) in config {
                    doc[k] = v.clone();
                }
                if let Some(email) = service_account_email {
                    doc["service_account_impersonation_url"] =
                        serde_json::json!(impersonation_url(email));
                }
                GcpCredentialSource::from_json(&doc.to_string())
            }
            GcpIdentity::ApplicationDefault => match std::env::var_os(APPLICATION_CREDENTIALS) {
                Some(path) => GcpCredentialSource::from_file(Path::new(&path)),
                None => Err(CloudError::InvalidInput {
                    input: "cloud_identity.wif_config".into(),
                    reason:
                        "is missing and GOOGLE_APPLICATION_CREDENTIALS is not set; give one of them"
                            .into(),
                }),
            },
        }
    }
}

/// Assumes a job's GCP identity: the credential, checked by fetching a first
/// access token now, which the terraform child gets as
/// `GOOGLE_OAUTH_ACCESS_TOKEN`.
pub async fn assume(identity: &GcpIdentity) -> Result<Assumed<GcpCredentialSource>, CloudError> {
    let session = identity.credential()?;
    let token = GcpTokenSource::new(session.clone())?.fetch_token().await?;
    Ok(Assumed {
        session,
        child_env: vec![("GOOGLE_OAUTH_ACCESS_TOKEN".into(), token.token)],
    })
}

/// The variable naming a credential file, as Google's client libraries read it.
pub const APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

fn impersonation_url(email: &str) -> String {
    format!(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
    )
}

/// The scope tendril asks for: all of Google Cloud (GKE accepts it).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's OAuth2 token endpoint (service-account keys).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Google's STS endpoint (workload identity federation).
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// The JWT-bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The token-exchange grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The requested token type of an STS exchange.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A service-account key file (`"type": "service_account"`).
#[derive(Clone, Debug, Deserialize)]
pub struct ServiceAccountKey {
    /// The account's e-mail (`iss` of the JWT).
    pub client_email: String,
    /// The RSA private key, PEM.
    pub private_key: Secret<String>,
    /// The key ID (JWT `kid`).
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// The token endpoint (JWT `aud`).
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.into()
}

fn default_sts_url() -> String {
    DEFAULT_STS_URL.into()
}

/// A workload identity federation configuration (`"type": "external_account"`).
#[derive(Clone, Debug, Deserialize)]
pub struct ExternalAccount {
    /// `//iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
    pub audience: String,
    /// e.g. `urn:ietf:params:oauth:token-type:jwt`.
    pub subject_token_type: String,
    /// The STS endpoint.
    #[serde(default = "default_sts_url")]
    pub token_url: String,
    /// `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/<email>:generateAccessToken`.
    #[serde(default)]
    pub service_account_impersonation_url: Option<String>,
    /// Where the subject token comes from.
    pub credential_source: SubjectTokenSource,
}

/// Where a workload identity subject token comes from.
#[derive(Clone, Debug, Deserialize)]
pub struct SubjectTokenSource {
    /// A file holding the token (re-read on every exchange: it is rotated).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A URL answering with the token.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers for the URL.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Text (default) or a field of a JSON document.
    #[serde(default)]
    pub format: Option<SubjectTokenFormat>,
}

/// The shape of a subject token file or answer.
#[derive(Clone, Debug, Deserialize)]
pub struct SubjectTokenFormat {
    /// `text` or `json`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `json`: the field holding the token.
    #[serde(default)]
    pub subject_token_field_name: Option<String>,
}

/// A GCP credential.
#[derive(Clone, Debug)]
pub enum GcpCredentialSource {
    /// A service-account key.
    ServiceAccountKey(ServiceAccountKey),
    /// Workload identity federation.
    ExternalAccount(ExternalAccount),
}

impl GcpCredentialSource {
    /// Workload identity federation from parts (as a job's `wif_config` gives
    /// them): the pool provider `audience`, where the subject token comes
    /// from, and the service account to impersonate, when there is one.
    pub fn workload_identity(
        audience: &str,
        subject: SubjectTokenSource,
        service_account_email: Option<&str>,
    ) -> Result<Self, CloudError> {
        if !audience.starts_with("//iam.googleapis.com/") {
            return Err(CloudError::InvalidInput {
                input: "wif_config.audience".into(),
                reason: format!(
                    "`{audience}` is not a pool provider; expected \
                     //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>"
                ),
            });
        }
        if subject.file.is_none() && subject.url.is_none() {
            return Err(CloudError::InvalidInput {
                input: "wif_config.credential_source".into(),
                reason: "needs `file` or `url`".into(),
            });
        }
        Ok(GcpCredentialSource::ExternalAccount(ExternalAccount {
            audience: audience.to_string(),
            subject_token_type: "urn:ietf:params:oauth:token-type:jwt".into(),
            token_url: DEFAULT_STS_URL.into(),
            service_account_impersonation_url: service_account_email.map(impersonation_url),
            credential_source: subject,
        }))
    }

    /// The credential in `file`, else in the file `GOOGLE_APPLICATION_CREDENTIALS` names.
    pub fn from_env(file: Option<&Path>) -> Result<Self, CloudError> {
        match file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(APPLICATION_CREDENTIALS).map(PathBuf::from))
        {
            Some(path) => Self::from_file(&path),
            None => Err(CloudError::NoCredentials {
                provider: "gcp",
                hint: "set GOOGLE_APPLICATION_CREDENTIALS to a credential file (a service-account \
                       key or a workload identity federation configuration)"
                    .into(),
            }),
        }
    }

    /// Reads a credential file (as `GOOGLE_APPLICATION_CREDENTIALS` names it).
    pub fn from_file(path: &Path) -> Result<Self, CloudError> {
        let text = std::fs::read_to_string(path).map_err(|source| CloudError::ReadFile {
            what: "GCP credential file",
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            CloudError::InvalidInput { reason, .. } => CloudError::InvalidInput {
                input: format!("GCP credential file `{}`", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses a credential document.
    pub fn from_json(text: &str) -> Result<Self, CloudError> {
        let bad = |reason: String| CloudError::InvalidInput {
            input: "GCP credential document".into(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
        match v["type"].as_str() {
            Some("service_account") => serde_json::from_value(v)
                .map(GcpCredentialSource::ServiceAccountKey)
                .map_err(|e| bad(format!("not a service-account key: {e}"))),
            Some("external_account") => {
                let ext: ExternalAccount = serde_json::from_value(v)
                    .map_err(|e| bad(format!("not an external_account configuration: {e}")))?;
                let src = &ext.credential_source;
                if src.file.is_none() && src.url.is_none() {
                    return Err(bad("credential_source needs `file` or `url`".into()));
                }
                Ok(GcpCredentialSource::ExternalAccount(ext))
            }
            other => Err(bad(format!(
                "`type` is {other:?}; expected \"service_account\" or \"external_account\""
            ))),
        }
    }
}

#[derive(Deserialize)]
struct OAuthToken {
    access_token: Secret<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpersonatedToken {
    access_token: Secret<String>,
    expire_time: String,
}

#[derive(serde::Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Fetches GCP access tokens from a credential.
pub struct GcpTokenSource {
    source: GcpCredentialSource,
    scope: String,
    http: reqwest::Client,
}

impl GcpTokenSource {
    /// Tokens for the cloud-platform scope.
    pub fn new(source: GcpCredentialSource) -> Result<Self, CloudError> {
        Ok(GcpTokenSource {
            source,
            scope: CLOUD_PLATFORM_SCOPE.into(),
            http: client("Google token service")?,
        })
    }

    /// A fresh access token.
    pub async fn fetch_token(&self) -> Result<AccessToken, CloudError> {
        match &self.source {
            GcpCredentialSource::ServiceAccountKey(key) => self.jwt_grant(key).await,
            GcpCredentialSource::ExternalAccount(ext) => self.federate(ext).await,
        }
    }

    async fn jwt_grant(&self, key: &ServiceAccountKey) -> Result<AccessToken, CloudError> {
        let now = Timestamp::now().as_second();
        let claims = JwtClaims {
            iss: &key.client_email,
            scope: &self.scope,
            aud: &key.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = key.private_key_id.clone();
        let signing = |message: String| CloudError::Signing {
            what: "the service-account JWT",
            message,
        };
        let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose().as_bytes())
            .map_err(|e| signing(format!("private_key is not an RSA PEM key ({e})")))?;
        let assertion = jsonwebtoken::encode(&header, &claims, &encoding)
            .map_err(|e| signing(e.to_string()))?;
        let form = [
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.as_str()),
        ];
        let answer: OAuthToken = send_json(
            "Google OAuth2",
            &format!("JWT grant for {}", key.client_email),
            &key.token_uri,
            self.http.post(&key.token_uri).form(&form),
        )
        .await?;
        Ok(expiring_in(answer.access_token, answer.expires_in))
    }

    async fn subject_token(&self, src: &SubjectTokenSource) -> Result<Secret<String>, CloudError> {
        let raw = if let Some(file) = &src.file {
            std::fs::read_to_string(file).map_err(|source| CloudError::ReadFile {
                what: "workload identity subject token file",
                path: file.display().to_string(),
                source,
            })?
        } else if let Some(url) = &src.url {
            let mut req = self.http.get(url);
            for (k, v) in &src.headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| CloudError::Transport {
                service: "subject token URL",
                url: super::http::display_url(url),
                message: e.to_string(),
            })?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| CloudError::Transport {
                service: "subject token URL",
                url: super::http::display_url(url),
                message: e.to_string(),
            })?;
            if !status.is_success() {
                return Err(CloudError::Refused {
                    service: "subject token URL",
                    action: format!("GET {}", super::http::display_url(url)),
                    message: format!("HTTP {status}"),
                });
            }
            text
        } else {
            return Err(CloudError::InvalidInput {
                input: "credential_source".into(),
                reason: "needs `file` or `url`".into(),
            });
        };
        let token = match &src.format {
            Some(f) if f.kind == "json" => {
                let field = f
                    .subject_token_field_name
                    .as_deref()
                    .unwrap_or("access_token");
                let v: serde_json::Value =
                    serde_json::from_str(&raw).map_err(|e| CloudError::InvalidInput {
                        input: "subject token".into(),
                        reason: format!("format is json but the source is not JSON ({e})"),
                    })?;
                v[field]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| CloudError::InvalidInput {
                        input: "subject token".into(),
                        reason: format!("the JSON has no string field `{field}`"),
                    })?
            }
            _ => raw.trim().to_string(),
        };
        if token.is_empty() {
            return Err(CloudError::InvalidInput {
                input: "subject token".into(),
                reason: "the subject token source is empty".into(),
            });
        }
        Ok(Secret::new(token))
    }

    async fn federate(&self, ext: &ExternalAccount) -> Result<AccessToken, CloudError> {
        let subject = self.subject_token(&ext.credential_source).await?;
        let form = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("audience", ext.audience.as_str()),
            ("scope", self.scope.as_str()),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.expose().as_str()),
            ("subject_token_type", ext.subject_token_type.as_str()),
        ];
        let federated: OAuthToken = send_json(
            "Google STS",
            &format!("token exchange for {}", ext.audience),
            &ext.token_url,
            self.http.post(&ext.token_url).form(&form),
        )
        .await?;
        let Some(url) = &ext.service_account_impersonation_url else {
            return Ok(expiring_in(federated.access_token, federated.expires_in));
        };
        let body = serde_json::json!({ "scope": [self.scope], "lifetime": "3600s" });
        let answer: ImpersonatedToken = send_json(
            "Google IAM Credentials",
            "generateAccessToken (service account impersonation)",
            url,
            self.http
                .post(url)
                .bearer_auth(federated.access_token.expose())
                .json(&body),
        )
        .await?;
        let expires_at: Timestamp =
            answer
                .expire_time
                .parse()
                .map_err(|e| CloudError::Transport {
                    service: "Google IAM Credentials",
                    url: super::http::display_url(url),
                    message: format!(
                        "expireTime `{}` is not a timestamp ({e})",
                        answer.expire_time
                    ),
                })?;
        Ok(AccessToken {
            token: answer.access_token,
            expires_at,
        })
    }
}

pub(crate) fn expiring_in(token: Secret<String>, seconds: Option<u64>) -> AccessToken {
    let secs = seconds.unwrap_or(3600).min(86_400 * 365);
    let expires_at = Timestamp::now()
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(Timestamp::MAX);
    AccessToken { token, expires_at }
}

impl TokenSource for GcpTokenSource {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        Box::pin(self.fetch_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_federation_settings_make_an_external_account() {
        let config = BTreeMap::from([(
            "credential_source".to_string(),
            serde_json::json!({"file": "/var/run/token"}),
        )]);
        let identity = GcpIdentity::Federated {
            audience: pool_audience("pool", "github"),
            config,
            service_account_email: Some("deployer@shop.iam.gserviceaccount.com".into()),
        };
        let GcpCredentialSource::ExternalAccount(ext) = identity.credential().unwrap() else {
            panic!("an external account")
        };
        assert_eq!(
            ext.audience,
            "//iam.googleapis.com/projects/-/locations/global/workloadIdentityPools/pool/providers/github"
        );
        assert_eq!(
            ext.subject_token_type,
            "urn:ietf:params:oauth:token-type:jwt"
        );
        assert_eq!(ext.credential_source.file, Some("/var/run/token".into()));
        assert!(ext.service_account_impersonation_url.unwrap().ends_with(
            "/serviceAccounts/deployer@shop.iam.gserviceaccount.com:generateAccessToken"
        ));
        let no_source = GcpIdentity::Federated {
            audience: pool_audience("pool", "github"),
            config: BTreeMap::new(),
            service_account_email: None,
        };
        assert!(no_source.credential().is_err());
    }
}
