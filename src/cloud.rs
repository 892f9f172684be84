//! The clouds tendril works with ([`Provider`]) and assuming credentials
//! per provider (AWS STS, GCP WIF, Azure federated).
//!
//! Everything that differs between providers lives in one file per provider:
//! `cloud/<provider>.rs` (its names, the Terraform output names its modules
//! use, assuming a job's identity with the terraform child's environment,
//! sessions from the environment, token sources) and
//! `kubeconfig/<provider>.rs` (cluster tokens, filling cluster facts,
//! exec-plugin arguments). This file holds the enums that dispatch to them.
//!
//! This module depends on nothing else in tendril: its inputs are its own
//! typed values ([`aws::AwsRole`], [`gcp::GcpIdentity`], Azure's tenant,
//! client and subscription); the pipeline converts job types into them.
//!
//! Every credential and token is held in a [`Secret`], so it never reaches a
//! log line, an error message or `Debug` output. Short-lived tokens are
//! [`AccessToken`]s with an expiry; [`CachedToken`] keeps one and fetches a
//! new one shortly before it expires, so a long wait never ends in a 401.

pub mod aws;
pub mod azure;
pub mod gcp;
pub(crate) mod http;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// A cloud tendril works with natively. "No cloud" (a job's `local`) is not
/// a provider: where a job may say `local`, its type is `Option<Provider>`,
/// so a cluster's provider (never local) is this same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon Web Services (EKS).
    Aws,
    /// Google Cloud (GKE).
    Gcp,
    /// Microsoft Azure (AKS).
    Azure,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 3] = [Provider::Aws, Provider::Gcp, Provider::Azure];

    /// The names the provider is known by; the first is its own (`aws`,
    /// `gcp`, `azure`), the others are accepted when parsing.
    fn names(self) -> &'static [&'static str] {
        match self {
            Provider::Aws => aws::NAMES,
            Provider::Gcp => gcp::NAMES,
            Provider::Azure => azure::NAMES,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.names()[0]
    }

    /// Every provider's name, for messages: `aws, gcp or azure`.
    fn list() -> String {
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// The Terraform output names this provider's modules commonly use (the
    /// default mapping of infrastructure facts).
    pub fn outputs(self) -> &'static OutputDefaults {
        match self {
            Provider::Aws => &aws::OUTPUTS,
            Provider::Gcp => &gcp::OUTPUTS,
            Provider::Azure => &azure::OUTPUTS,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = CloudError;
    /// A provider by any of its names (`aws`/`eks`, `gcp`/`google`/`gke`,
    /// `azure`/`azurerm`/`aks`), in any case.
    fn from_str(s: &str) -> Result<Self, CloudError> {
        let lower = s.to_ascii_lowercase();
        Provider::ALL
            .into_iter()
            .find(|p| p.names().contains(&lower.as_str()))
            .ok_or_else(|| CloudError::UnknownProvider(s.to_string()))
    }
}

/// How one provider's Terraform modules commonly name their outputs: the
/// default output for each infrastructure fact (a job maps any of them to
/// another output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDefaults {
    /// The cluster's name.
    pub cluster_name: &'static str,
    /// The API server URL.
    pub cluster_endpoint: &'static str,
    /// The cluster ARN or resource ID.
    pub cluster_id: &'static str,
    /// The cluster CA bundle.
    pub cluster_ca: &'static str,
    /// The region or location.
    pub region: &'static str,
    /// The VPC / VNet ID.
    pub network_id: &'static str,
    /// The database name.
    pub database_name: &'static str,
    /// The database writer endpoint.
    pub database_writer_endpoint: &'static str,
    /// The database reader endpoint.
    pub database_reader_endpoint: &'static str,
    /// The secret holding the database credentials.
    pub database_secret: &'static str,
    /// The cache primary endpoint.
    pub cache_primary_endpoint: &'static str,
    /// The cache reader endpoint.
    pub cache_reader_endpoint: &'static str,
    /// The DNS zone.
    pub dns_zone: &'static str,
    /// The DNS domain.
    pub dns_domain: &'static str,
    /// True when the outputs may leave out the cluster endpoint and CA
    /// because tendril looks them up with the provider's API (EKS
    /// DescribeCluster).
    pub endpoint_lookup: bool,
}

/// Environment variables for a terraform child, secret values wrapped.
pub type ChildEnv = Vec<(String, Secret<String>)>;

/// What assuming a provider's identity for a job gives: the session tendril
/// keeps (for cluster tokens) and the environment of the terraform child.
pub struct Assumed<S> {
    /// What tendril itself holds.
    pub session: S,
    /// Variables for the terraform child.
    pub child_env: ChildEnv,
}

/// The cloud credentials tendril holds, one variant per provider.
#[derive(Clone, Debug)]
pub enum Session {
    /// AWS credentials (refreshing), for EKS tokens and DescribeCluster.
    Aws(aws::AwsCredentials),
    /// A GCP credential, for GKE tokens.
    Gcp(gcp::GcpCredentialSource),
    /// An Azure identity, for AKS tokens.
    Azure(azure::AzureIdentity),
}

impl Session {
    /// The provider these credentials belong to.
    pub fn provider(&self) -> Provider {
        match self {
            Session::Aws(_) => Provider::Aws,
            Session::Gcp(_) => Provider::Gcp,
            Session::Azure(_) => Provider::Azure,
        }
    }
}

impl From<aws::AwsCredentials> for Session {
    fn from(c: aws::AwsCredentials) -> Self {
        Session::Aws(c)
    }
}

impl From<gcp::GcpCredentialSource> for Session {
    fn from(c: gcp::GcpCredentialSource) -> Self {
        Session::Gcp(c)
    }
}

impl From<azure::AzureIdentity> for Session {
    fn from(c: azure::AzureIdentity) -> Self {
        Session::Azure(c)
    }
}

/// What went wrong while assuming credentials or fetching a token.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An input (ARN, region, credential file, ...) is malformed.
    #[error("invalid {input}: {reason}")]
    InvalidInput {
        /// Which input (e.g. `role_arn`).
        input: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A local file (token file, key file, credential configuration) could not be read.
    #[error("cannot read {what} `{path}`: {source}; check that the file exists and is readable")]
    ReadFile {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No base credentials were found for a provider.
    #[error("no {provider} credentials found: {hint}")]
    NoCredentials {
        /// `aws`, `gcp` or `azure`.
        provider: &'static str,
        /// Where credentials are looked for.
        hint: String,
    },
    /// A token or credential service answered with an error.
    #[error("{service} refused the request ({action}): {message}")]
    Refused {
        /// The service (e.g. `AWS STS`, `Google STS`, `Azure AD`).
        service: &'static str,
        /// What was asked (e.g. `AssumeRole arn:aws:iam::...`).
        action: String,
        /// The service's own message (never contains the credential).
        message: String,
    },
    /// A token service could not be reached or answered something unreadable.
    #[error("cannot reach {service} at {url}: {message}")]
    Transport {
        /// The service.
        service: &'static str,
        /// The URL (without query string).
        url: String,
        /// What failed.
        message: String,
    },
    /// A provider name is none of tendril's.
    #[error("unknown cloud provider `{0}`; expected {known}", known = Provider::list())]
    UnknownProvider(String),
    /// Signing a request or a JWT failed.
    #[error("cannot sign {what}: {message}")]
    Signing {
        /// What was being signed.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

/// A bearer token with the instant it stops being valid.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The token itself.
    pub token: Secret<String>,
    /// When the token expires.
    pub expires_at: Timestamp,
}

impl AccessToken {
    /// True when the token expires within `margin` from `now`.
    pub fn expires_within(&self, margin: Duration, now: Timestamp) -> bool {
        let margin = jiff::SignedDuration::try_from(margin).unwrap_or(jiff::SignedDuration::MAX);
        match now.checked_add(margin) {
            Ok(limit) => self.expires_at <= limit,
            Err(_) => true,
        }
    }
}

/// Something that produces bearer tokens (GCP, Azure, EKS).
pub trait TokenSource: Send + Sync {
    /// Fetches a fresh token.
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        (**self).fetch()
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        (**self).fetch()
    }
}

/// Default margin before expiry at which a cached token is replaced.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(120);

/// A [`TokenSource`] that keeps its last token and fetches a new one only when
/// the cached one expires within the refresh margin.
pub struct CachedToken<S> {
    inner: S,
    refresh_before: Duration,
    cached: tokio::sync::Mutex<Option<AccessToken>>,
}

impl<S: TokenSource> CachedToken<S> {
    /// Caches `inner`'s tokens, refreshing [`DEFAULT_REFRESH_BEFORE`] before expiry.
    pub fn new(inner: S) -> Self {
        Self::with_refresh_before(inner, DEFAULT_REFRESH_BEFORE)
    }

    /// Caches `inner`'s tokens, refreshing `refresh_before` before expiry.
    pub fn with_refresh_before(inner: S, refresh_before: Duration) -> Self {
        CachedToken {
            inner,
            refresh_before,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token when still fresh, else a new one.
    pub async fn token(&self) -> Result<AccessToken, CloudError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && !token.expires_within(self.refresh_before, Timestamp::now())
        {
            return Ok(token.clone());
        }
        let fresh = self.inner.fetch().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

impl<S: TokenSource> TokenSource for CachedToken<S> {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        Box::pin(self.token())
    }
}

/// Formats a timestamp as Kubernetes and most token services do: RFC 3339, UTC, whole seconds.
pub fn rfc3339_seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_parse_and_serialize_alike() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        assert_eq!("EKS".parse::<Provider>().unwrap(), Provider::Aws);
        assert_eq!("google".parse::<Provider>().unwrap(), Provider::Gcp);
        assert_eq!("azurerm".parse::<Provider>().unwrap(), Provider::Azure);
        let err = "local".parse::<Provider>().unwrap_err().to_string();
        assert!(err.contains("expected aws, gcp or azure"), "{err}");
    }
}
