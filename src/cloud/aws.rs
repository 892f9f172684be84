//! AWS: base credentials from the standard provider chain, then STS AssumeRole.
//!
//! [`AwsCredentials`] is a cheap, clonable handle on a credential source with a
//! cache in front of it: assumed-role credentials are fetched again
//! [`AwsOptions::refresh_before`] before they expire, so a job that waits for
//! twenty minutes and then signs a request still signs with valid credentials.
//! It also implements the SDK's `ProvideCredentials`, so SDK clients built
//! from [`AwsCredentials::sdk_config`] share the same cache.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    self, ProvideCredentials, SharedCredentialsProvider, error::CredentialsError,
};

use super::{Assumed, ChildEnv, CloudError, OutputDefaults};
use crate::Secret;

/// The names AWS goes by (`Provider::Aws`).
pub const NAMES: &[&str] = &["aws", "eks"];

/// The output names of common AWS modules (EKS, RDS, ElastiCache, Route 53).
/// EKS clusters may leave out the endpoint and CA: DescribeCluster gives them.
pub const OUTPUTS: OutputDefaults = OutputDefaults {
    cluster_name: "eks_cluster_name",
    cluster_endpoint: "eks_cluster_endpoint",
    cluster_id: "eks_cluster_arn",
    cluster_ca: "eks_cluster_certificate_authority_data",
    region: "region",
    network_id: "vpc_id",
    database_name: "rds_cluster_database_name",
    database_writer_endpoint: "rds_cluster_endpoint",
    database_reader_endpoint: "rds_cluster_reader_endpoint",
    database_secret: "rds_master_credentials_secret_arn",
    cache_primary_endpoint: "redis_primary_endpoint_address",
    cache_reader_endpoint: "redis_reader_endpoint_address",
    dns_zone: "route53_zone_id",
    dns_domain: "domain_name",
    endpoint_lookup: true,
};

/// Credentials from the environment (see [`AwsCredentials::from_environment`]),
/// with `role` assumed when one is given.
pub async fn session(
    options: &AwsOptions,
    role: Option<&AwsRole>,
) -> Result<AwsCredentials, CloudError> {
    let base = AwsCredentials::from_environment(options).await?;
    match role {
        Some(role) => base.assume_role(role, options).await,
        None => Ok(base),
    }
}

/// Assumes a job's role: base credentials from the standard chain, then STS
/// AssumeRole (refreshed before expiry). The terraform child gets the
/// assumed credentials and the region ([`AwsCredentials::child_env`]).
pub async fn assume(
    role: &AwsRole,
    options: &AwsOptions,
) -> Result<Assumed<AwsCredentials>, CloudError> {
    let session = session(options, Some(role)).await?;
    let child_env = session.child_env().await?;
    Ok(Assumed { session, child_env })
}

/// A validated IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleArn(String);

impl RoleArn {
    /// The ARN text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-digit account ID.
    pub fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

impl FromStr for RoleArn {
    type Err = CloudError;

    fn from_str(s: &str) -> Result<Self, CloudError> {
        let bad = |reason: &str| CloudError::InvalidInput {
            input: "role_arn".into(),
            reason: format!(
                "`{s}` is not an IAM role ARN ({reason}); expected \
                 arn:aws:iam::<12-digit account id>:role/<role name>"
            ),
        };
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(bad(
                "it must have six `:`-separated parts starting with `arn`",
            ));
        }
        if !parts[1].starts_with("aws") {
            return Err(bad("the partition must be aws, aws-cn, aws-us-gov, ..."));
        }
        if parts[2] != "iam" {
            return Err(bad("the service must be `iam`"));
        }
        if !parts[3].is_empty() {
            return Err(bad("IAM ARNs have no region"));
        }
        if parts[4].len() != 12 || !parts[4].bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account ID must be 12 digits"));
        }
        let Some(name) = parts[5].strip_prefix("role/") else {
            return Err(bad("the resource must start with `role/`"));
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
        if name.is_empty() || name.ends_with('/') || !name.chars().all(valid) {
            return Err(bad(
                "the role name is empty or has characters IAM does not allow",
            ));
        }
        Ok(RoleArn(s.to_string()))
    }
}

impl TryFrom<String> for RoleArn {
    type Error = CloudError;
    fn try_from(s: String) -> Result<Self, CloudError> {
        s.parse()
    }
}

impl From<RoleArn> for String {
    fn from(a: RoleArn) -> String {
        a.0
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleArn({})", self.0)
    }
}

/// The role a job runs as.
#[derive(Clone, Debug)]
pub struct AwsRole {
    /// The role to assume.
    pub role_arn: RoleArn,
    /// The external ID the role's trust policy asks for.
    pub external_id: Option<Secret<String>>,
    /// The STS session name (`tendril-<job id>` for jobs).
    pub session_name: String,
}

impl AwsRole {
    /// A role from its ARN text (checked), an external ID, and the session
    /// name wanted (made one STS accepts, see [`session_name`]).
    pub fn new(
        role_arn: &str,
        external_id: Option<Secret<String>>,
        wanted_session_name: &str,
    ) -> Result<Self, CloudError> {
        Ok(AwsRole {
            role_arn: role_arn.parse()?,
            external_id,
            session_name: session_name(wanted_session_name),
        })
    }

    /// The role for a job: session name `tendril-<job id>` (cut to STS's 64
    /// characters, characters STS refuses replaced by `-`).
    pub fn for_job(
        role_arn: &str,
        external_id: Option<Secret<String>>,
        job_id: &str,
    ) -> Result<Self, CloudError> {
        AwsRole::new(role_arn, external_id, &format!("tendril-{job_id}"))
    }
}

/// A session name STS accepts: `[\w+=,.@-]{2,64}`.
pub fn session_name(wanted: &str) -> String {
    let mut name: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// Settings for reaching AWS.
#[derive(Clone, Debug)]
pub struct AwsOptions {
    /// The region; else `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile.
    pub region: Option<String>,
    /// Another endpoint for every AWS service (tests: moto; else `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// How long assumed credentials last (STS `DurationSeconds`), 3600 s by default.
    pub session_length: Duration,
    /// Cached credentials are replaced this long before they expire (5 min by default).
    pub refresh_before: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            region: None,
            endpoint_url: None,
            session_length: Duration::from_secs(3600),
            refresh_before: Duration::from_secs(300),
        }
    }
}

/// AWS credentials with a refreshing cache; cheap to clone.
#[derive(Clone)]
pub struct AwsCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    source: SharedCredentialsProvider,
    cache: tokio::sync::Mutex<Option<Credentials>>,
    region: String,
    endpoint_url: Option<String>,
    refresh_before: Duration,
    described_as: String,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("source", &self.inner.described_as)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn region_from_env() -> Option<String> {
    env_nonempty("AWS_REGION").or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
}

/// Static credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN`, read directly (no profile, no instance metadata).
pub fn env_credentials() -> Option<Credentials> {
    let key = env_nonempty("AWS_ACCESS_KEY_ID")?;
    let secret = env_nonempty("AWS_SECRET_ACCESS_KEY")?;
    Some(Credentials::new(
        key,
        secret,
        env_nonempty("AWS_SESSION_TOKEN"),
        None,
        "env",
    ))
}

impl AwsCredentials {
    /// Static credentials (never refreshed) in a region.
    pub fn from_static(credentials: Credentials, region: &str, options: &AwsOptions) -> Self {
        let cache = tokio::sync::Mutex::new(Some(credentials.clone()));
        AwsCredentials {
            inner: Arc::new(Inner {
                source: SharedCredentialsProvider::new(credentials),
                cache,
                region: region.to_string(),
                endpoint_url: options.endpoint_url.clone(),
                refresh_before: options.refresh_before,
                described_as: "static credentials".into(),
            }),
        }
    }

    /// The fast path: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) read directly, with no profile parsing and no
    /// instance-metadata probing. `None` when they are not set.
    pub fn from_env_vars(options: &AwsOptions) -> Result<Option<Self>, CloudError> {
        let Some(creds) = env_credentials() else {
            return Ok(None);
        };
        let region = options
            .region
            .clone()
            .or_else(region_from_env)
            .ok_or_else(no_region)?;
        let mut options = options.clone();
        if options.endpoint_url.is_none() {
            options.endpoint_url = env_nonempty("AWS_ENDPOINT_URL");
        }
        let mut me = Self::from_static(creds, &region, &options);
        if let Some(inner) = Arc::get_mut(&mut me.inner) {
            inner.described_as = "environment variables".into();
        }
        Ok(Some(me))
    }

    /// Base credentials: environment variables when set, else the SDK's full
    /// default chain (profile, SSO cache, web identity, ECS, instance metadata).
    pub async fn from_environment(options: &AwsOptions) -> Result<Self, CloudError> {
        if let Some(me) = Self::from_env_vars(options)? {
            return Ok(me);
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(no_region)?;
        let source = config
            .credentials_provider()
            .ok_or_else(|| CloudError::NoCredentials {
                provider: "aws",
                hint: "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web identity \
                   token, or run on a machine with an instance role"
                    .into(),
            })?;
        let me = AwsCredentials {
            inner: Arc::new(Inner {
                source,
                cache: tokio::sync::Mutex::new(None),
                region,
                endpoint_url: options
                    .endpoint_url
                    .clone()
                    .or_else(|| env_nonempty("AWS_ENDPOINT_URL")),
                refresh_before: options.refresh_before,
                described_as: "the default credential chain".into(),
            }),
        };
        me.credentials().await?;
        Ok(me)
    }

    /// Assumes `role` with these credentials (STS AssumeRole, `options.session_length`).
    /// The first set of credentials is fetched now, so a refused role fails here.
    pub async fn assume_role(
        &self,
        role: &AwsRole,
        options: &AwsOptions,
    ) -> Result<AwsCredentials, CloudError> {
        let base = self.sdk_config().await;
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.as_str())
            .session_name(&role.session_name)
            .session_length(options.session_length)
            .region(Region::new(self.inner.region.clone()))
            .configure(&base);
        if let Some(id) = &role.external_id {
            builder = builder.external_id(id.expose());
        }
        let provider = builder.build().await;
        let me = AwsCredentials {
            inner: Arc::new(Inner {
                source: SharedCredentialsProvider::new(provider),
                cache: tokio::sync::Mutex::new(None),
                region: self.inner.region.clone(),
                endpoint_url: self.inner.endpoint_url.clone(),
                refresh_before: options.refresh_before,
                described_as: format!("role {} (session {})", role.role_arn, role.session_name),
            }),
        };
        me.credentials().await.map_err(|e| match e {
            CloudError::Refused { message, .. } => CloudError::Refused {
                service: "AWS STS",
                action: format!("AssumeRole {}", role.role_arn),
                message: format!(
                    "{message}; check the role's trust policy allows these base credentials \
                     and the external ID"
                ),
            },
            other => other,
        })?;
        Ok(me)
    }

    /// The region these credentials are used in.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The endpoint override, when there is one.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.inner.endpoint_url.as_deref()
    }

    /// Current credentials: the cached ones, or new ones when the cached ones
    /// expire within the refresh margin.
    pub async fn credentials(&self) -> Result<Credentials, CloudError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(creds) = cache.as_ref() {
            let fresh = match creds.expiry() {
                None => true,
                Some(expiry) => SystemTime::now() + self.inner.refresh_before < expiry,
            };
            if fresh {
                return Ok(creds.clone());
            }
        }
        let creds = self
            .inner
            .source
            .provide_credentials()
            .await
            .map_err(|e| match e {
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(
                    _,
                ) => CloudError::NoCredentials {
                    provider: "AWS",
                    hint: NO_CREDENTIALS_HINT.to_string(),
                },
                other => CloudError::Refused {
                    service: "AWS",
                    action: format!("credentials from {}", self.inner.described_as),
                    message: credentials_error_message(&other),
                },
            })?;
        *cache = Some(creds.clone());
        Ok(creds)
    }

    /// An SDK configuration that uses these credentials (through the same
    /// cache), the region and the endpoint override: build SDK clients from it.
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.inner.region.clone()))
            .credentials_provider(self.clone());
        if let Some(url) = &self.inner.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        loader.load().await
    }

    /// Environment variables that hand the current credentials to a child
    /// process (terraform): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` when there is one, `AWS_REGION`, `AWS_DEFAULT_REGION`.
    /// The credentials are valid for at least the refresh margin.
    pub async fn child_env(&self) -> Result<ChildEnv, CloudError> {
        let creds = self.credentials().await?;
        let mut env = vec![
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                Secret::new(creds.access_key_id().to_string()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                Secret::new(creds.secret_access_key().to_string()),
            ),
        ];
        if let Some(token) = creds.session_token() {
            env.push((
                "AWS_SESSION_TOKEN".to_string(),
                Secret::new(token.to_string()),
            ));
        }
        env.push(("AWS_REGION".into(), Secret::new(self.inner.region.clone())));
        env.push((
            "AWS_DEFAULT_REGION".into(),
            Secret::new(self.inner.region.clone()),
        ));
        Ok(env)
    }
}

fn no_region() -> CloudError {
    CloudError::InvalidInput {
        input: "region".into(),
        reason: "no AWS region given; pass --region, set AWS_REGION, or set one in the profile"
            .into(),
    }
}

impl ProvideCredentials for AwsCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

/// Where the default chain looked, for a person who has no credentials yet.
const NO_CREDENTIALS_HINT: &str = "tried, in order: the environment (AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY), the shared files (~/.aws/credentials and ~/.aws/config, profile \
     AWS_PROFILE or default), web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), the \
     ECS container endpoint and the EC2 instance metadata service; give the base credentials \
     through one of them";

/// What a failed credentials lookup says to a person: for no credentials at
/// all, which sources were tried and how to give one; otherwise the provider's
/// own message (never the SDK's Debug form).
fn credentials_error_message(
    e: &aws_credential_types::provider::error::CredentialsError,
) -> String {
    use aws_credential_types::provider::error::CredentialsError;
    match e {
        CredentialsError::CredentialsNotLoaded(_) => NO_CREDENTIALS_HINT.to_string(),
        CredentialsError::ProviderTimedOut(_) => {
            "the credential provider timed out (the EC2 instance metadata service or the container \
             endpoint did not answer); give the base credentials through the environment or \
             ~/.aws/credentials"
                .to_string()
        }
        other => crate::errors::chain_inline(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert!(
            "arn:aws:iam::123456789012:role/Deployer"
                .parse::<RoleArn>()
                .is_ok()
        );
        assert!(
            "arn:aws-cn:iam::123456789012:role/path/to/R_1"
                .parse::<RoleArn>()
                .is_ok()
        );
        for bad in [
            "",
            "arn:aws:iam::12345:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam:eu-west-1:123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "role/x",
        ] {
            let err = bad.parse::<RoleArn>().unwrap_err().to_string();
            assert!(err.contains("role_arn"), "{err}");
        }
    }

    #[test]
    fn session_names() {
        assert_eq!(session_name("tendril-3f0c9a52"), "tendril-3f0c9a52");
        assert_eq!(session_name("tendril-a b/c"), "tendril-a-b-c");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
        assert_eq!(session_name(""), "--");
    }
}
