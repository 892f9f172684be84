//! EKS: the bearer token `aws eks get-token` makes, and DescribeCluster.
//!
//! The token is `k8s-aws-v1.` + base64url (no padding) of a presigned STS
//! `GetCallerIdentity` URL on the regional endpoint, signed (SigV4, query
//! parameters, `X-Amz-Expires=60`) over the `host` and `x-k8s-aws-id:
//! <cluster>` headers. The API server's authenticator calls that URL to learn
//! who the caller is; it accepts the URL for 15 minutes after signing, and
//! tendril treats the token as valid for 14, like the aws CLI.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use futures::future::BoxFuture;
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{KubeconfigError, TokenOptions};
use crate::Secret;
use crate::cloud::aws::{self, AwsCredentials, AwsOptions, AwsRole};
use crate::cloud::{AccessToken, CloudError, TokenSource};
use crate::facts::{CaBundle, ClusterFacts, Endpoint, keys};

/// The prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// How long the presigned URL says it is valid (`X-Amz-Expires`).
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// How long tendril (like the aws CLI) treats a token as valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
/// The header that binds the token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// Characters botocore leaves unescaped in query strings (RFC 3986 unreserved).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The regional STS host for a region (`sts.<region>.amazonaws.com`, `.com.cn` in China).
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The presigned STS `GetCallerIdentity` URL for `cluster`, signed at `at`.
/// Its query parameters come in botocore's order, so the URL is byte-for-byte
/// the one `aws eks get-token` builds from the same inputs.
pub fn presigned_url(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    at: SystemTime,
) -> Result<Secret<String>, CloudError> {
    if !valid_region(region) {
        return Err(CloudError::InvalidInput {
            input: "region".into(),
            reason: format!("`{region}` is not an AWS region name (e.g. eu-west-1)"),
        });
    }
    if cluster.is_empty() || cluster.len() > 100 || cluster.contains(char::is_control) {
        return Err(CloudError::InvalidInput {
            input: "cluster".into(),
            reason: format!("`{cluster}` is not an EKS cluster name (1-100 characters)"),
        });
    }
    let host = sts_host(region);
    let base = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity: Identity = credentials.clone().into();
    let signing_err = |message: String| CloudError::Signing {
        what: "the EKS token",
        message,
    };
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| signing_err(e.to_string()))?;
    let headers = [("host", host.as_str()), (CLUSTER_ID_HEADER, cluster)];
    let request = SignableRequest::new("GET", &base, headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| signing_err(e.to_string()))?;
    let (instructions, _) = sign(request, &params.into())
        .map_err(|e| signing_err(e.to_string()))?
        .into_parts();
    let get = |name: &str| {
        instructions
            .params()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let mut url = base;
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ] {
        if let Some(value) = get(name) {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(&value, QUERY));
        }
    }
    if get("X-Amz-Signature").is_none() {
        return Err(signing_err("the signer returned no signature".into()));
    }
    Ok(Secret::new(url))
}

/// The EKS bearer token for `cluster`, signed at `at`, valid for
/// [`TOKEN_LIFETIME`] (or until the credentials expire, when sooner).
pub fn token(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    at: SystemTime,
) -> Result<AccessToken, CloudError> {
    let url = presigned_url(credentials, region, cluster, at)?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.expose().as_bytes())
    );
    let mut expires = at + TOKEN_LIFETIME;
    if let Some(creds_expiry) = credentials.expiry() {
        expires = expires.min(creds_expiry);
    }
    let expires_at = Timestamp::try_from(expires).map_err(|e| CloudError::Signing {
        what: "the EKS token",
        message: format!("expiry out of range ({e})"),
    })?;
    Ok(AccessToken {
        token: Secret::new(token),
        expires_at,
    })
}

/// A [`TokenSource`] of EKS tokens for one cluster, signed with refreshing
/// AWS credentials.
#[derive(Clone, Debug)]
pub struct EksTokenSource {
    credentials: AwsCredentials,
    cluster: String,
    region: String,
}

impl EksTokenSource {
    /// Tokens for `cluster` in `region` (the STS region used for signing).
    pub fn new(credentials: AwsCredentials, cluster: &str, region: &str) -> Self {
        EksTokenSource {
            credentials,
            cluster: cluster.to_string(),
            region: region.to_string(),
        }
    }
}

impl TokenSource for EksTokenSource {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        Box::pin(async move {
            let creds = self.credentials.credentials().await?;
            token(&creds, &self.region, &self.cluster, SystemTime::now())
        })
    }
}

/// The token source for an EKS cluster, after [`complete_from_describe`]:
/// tokens signed for the cluster's region (else the credentials').
pub async fn token_source(
    cluster: &mut ClusterFacts,
    credentials: &AwsCredentials,
) -> Result<EksTokenSource, KubeconfigError> {
    complete_from_describe(cluster, credentials).await?;
    let region = cluster
        .aws_region()
        .unwrap_or_else(|| credentials.region().to_string());
    Ok(EksTokenSource::new(
        credentials.clone(),
        &cluster.name,
        &region,
    ))
}

/// Sets the cluster's region for a kubeconfig: `options.region`, else the
/// facts' region or the cluster ARN's, else `AWS_REGION` / `AWS_DEFAULT_REGION`.
pub fn prepare(cluster: &mut ClusterFacts, options: &TokenOptions) -> Result<(), CloudError> {
    let region = options
        .region
        .clone()
        .or_else(|| cluster.aws_region())
        .or_else(aws::region_from_env)
        .ok_or_else(|| CloudError::InvalidInput {
            input: "region".into(),
            reason: "no region in the outputs or the cluster ARN, and AWS_REGION is not set; \
                     give the cluster's region"
                .into(),
        })?;
    cluster.region = Some(region);
    Ok(())
}

/// Credentials for a command without a job: the environment's, in the
/// cluster's region, with `options.role_arn` assumed (session
/// `tendril-kubeconfig`).
pub async fn session(
    cluster: &ClusterFacts,
    options: &TokenOptions,
) -> Result<AwsCredentials, CloudError> {
    let aws_options = AwsOptions {
        region: cluster.aws_region(),
        ..Default::default()
    };
    let role = options
        .role_arn
        .as_deref()
        .map(|arn| AwsRole::new(arn, None, "tendril-kubeconfig"))
        .transpose()?;
    aws::session(&aws_options, role.as_ref()).await
}

/// Source label for facts fetched with DescribeCluster.
pub const DESCRIBE_SOURCE: &str = "(EKS DescribeCluster)";

/// Fills the endpoint, CA and ARN of an EKS cluster that the outputs left out,
/// with `DescribeCluster`. Facts already present are kept.
pub async fn complete_from_describe(
    facts: &mut ClusterFacts,
    credentials: &AwsCredentials,
) -> Result<(), KubeconfigError> {
    if facts.endpoint.is_some() && facts.ca.is_some() {
        return Ok(());
    }
    let region = facts
        .aws_region()
        .unwrap_or_else(|| credentials.region().to_string());
    let conf = credentials.sdk_config().await;
    let conf = conf
        .into_builder()
        .region(aws_config::Region::new(region.clone()))
        .build();
    let client = aws_sdk_eks::Client::new(&conf);
    let describe_err = |message: String| KubeconfigError::Describe {
        cluster: facts.name.clone(),
        region: region.clone(),
        message,
    };
    let out = client
        .describe_cluster()
        .name(&facts.name)
        .send()
        .await
        .map_err(|e| describe_err(aws_sdk_eks::error::DisplayErrorContext(&e).to_string()))?;
    let cluster = out
        .cluster
        .ok_or_else(|| describe_err("the answer has no cluster".into()))?;
    let bad = |reason: String| KubeconfigError::BadFact {
        source_name: format!("EKS DescribeCluster `{}`", facts.name),
        reason,
    };
    if facts.endpoint.is_none() {
        let endpoint = cluster.endpoint.as_deref().ok_or_else(|| {
            describe_err("the cluster has no endpoint yet (is it still creating?)".into())
        })?;
        facts.endpoint =
            Some(Endpoint::parse_api_server(endpoint).map_err(|e| bad(e.to_string()))?);
        facts
            .sources
            .insert(keys::CLUSTER_ENDPOINT.into(), DESCRIBE_SOURCE.into());
    }
    if facts.ca.is_none() {
        let data = cluster
            .certificate_authority
            .and_then(|c| c.data)
            .ok_or_else(|| describe_err("the cluster has no certificate authority data".into()))?;
        facts.ca = Some(
            CaBundle::parse(&data)
                .map_err(|r| bad(format!("its certificate authority data is unusable: {r}")))?,
        );
        facts
            .sources
            .insert(keys::CLUSTER_CA.into(), DESCRIBE_SOURCE.into());
    }
    if facts.id.is_none() {
        facts.id = cluster.arn;
    }
    if facts.region.is_none() {
        facts.region = Some(region);
    }
    Ok(())
}

/// The arguments of the exec plugin a kubeconfig for this EKS cluster runs
/// (`tendril token eks --cluster NAME [--region REGION] [--role-arn ARN]`).
pub fn exec_args(cluster: &ClusterFacts, options: &TokenOptions) -> Vec<String> {
    let mut args = vec![
        "token".into(),
        "eks".into(),
        "--cluster".into(),
        cluster.name.clone(),
    ];
    if let Some(r) = &cluster.region {
        args.extend(["--region".into(), r.clone()]);
    }
    if let Some(arn) = &options.role_arn {
        args.extend(["--role-arn".into(), arn.clone()]);
    }
    args
}

/// The default context name: the cluster ARN (as `aws eks update-kubeconfig`
/// names it), else the cluster name.
pub fn context_name(cluster: &ClusterFacts) -> String {
    match &cluster.id {
        Some(arn) if arn.starts_with("arn:") => arn.clone(),
        _ => cluster.name.clone(),
    }
}
