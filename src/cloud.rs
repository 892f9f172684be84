//! Assuming credentials per provider (AWS STS, GCP WIF, Azure federated).
//!
//! This module depends on nothing else in tendril: its inputs are its own
//! typed values ([`aws::AwsRole`], [`gcp::GcpCredentialSource`],
//! [`azure::AzureIdentity`]); the pipeline converts job types into them.
//!
//! Every credential and token is held in a [`Secret`], so it never reaches a
//! log line, an error message or `Debug` output. Short-lived tokens are
//! [`AccessToken`]s with an expiry; [`CachedToken`] keeps one and fetches a
//! new one shortly before it expires, so a long wait never ends in a 401.

pub mod aws;
pub mod azure;
pub mod gcp;
pub(crate) mod http;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::Secret;

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
