//! Kube clients and kubeconfig files from cluster facts and native tokens (EKS, GKE, AKS).
//!
//! - [`eks`]: the EKS bearer token exactly as `aws eks get-token` makes it, and
//!   DescribeCluster for clusters whose outputs lack the endpoint or CA;
//! - [`gke`], [`aks`]: bearer tokens from GCP and Azure credentials;
//! - [`token_source`], [`session`], [`prepare`], [`exec_args`],
//!   [`context_name`]: the per-provider steps of cluster access, dispatched
//!   to those modules (the pipeline and `tendril kubeconfig` both call them);
//! - [`client_for_cluster`]: a kube-rs [`kube::Client`] built in memory from
//!   [`ClusterFacts`], whose every request carries a token that is refreshed
//!   before it expires, so a long wait never ends in a 401;
//! - [`client_from_kubeconfig`]: a client for a kubeconfig a job gives;
//! - [`KubeconfigSource`]: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`;
//! - [`write_kubeconfig`]: a kubeconfig file merged atomically into an existing one.
//!
//! TLS is always verified against the cluster's CA: there is no way to skip it.

pub mod aks;
pub mod eks;
mod file;
pub mod gke;
pub mod locate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Request, header::AUTHORIZATION};
use kube::client::ConfigExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::cloud::{CachedToken, CloudError, Provider, Session, TokenSource};
use crate::facts::{ClusterFacts, keys};

pub use file::{UserAuth, kubeconfig_for_cluster, merge, write_kubeconfig};
pub use locate::KubeconfigSource;

/// What went wrong while building cluster access.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Credentials or a token could not be obtained.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A cluster fact is missing.
    #[error("the cluster `{cluster}` has no {what}; {hint}")]
    MissingFact {
        /// The cluster name.
        cluster: String,
        /// What is missing.
        what: &'static str,
        /// How to provide it.
        hint: String,
    },
    /// A cluster fact has a value that cannot work (a CA that is no certificate, a bad URL).
    #[error("{source_name} is wrong: {reason}")]
    BadFact {
        /// Where the value came from (e.g. "Terraform output `eks_cluster_certificate_authority_data` ...").
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The API server's certificate does not chain to the CA from the facts.
    #[error(
        "the API server at {endpoint} presented a certificate that the CA from {ca_source} does not \
         verify ({detail}); check that output holds this cluster's CA"
    )]
    CaMismatch {
        /// The endpoint.
        endpoint: String,
        /// Where the CA came from.
        ca_source: String,
        /// The TLS error.
        detail: String,
    },
    /// The API server could not be reached.
    #[error("cannot reach the API server at {endpoint} (from {endpoint_source}): {detail}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Where the endpoint came from.
        endpoint_source: String,
        /// What failed.
        detail: String,
    },
    /// The API server refused the token.
    #[error(
        "the API server at {endpoint} refused the {provider} token (HTTP {status}); check that the \
         identity is mapped to a Kubernetes user (EKS access entries / aws-auth, GKE IAM, AKS RBAC)"
    )]
    Unauthorized {
        /// The endpoint.
        endpoint: String,
        /// The token kind.
        provider: String,
        /// HTTP status.
        status: u16,
    },
    /// A kubeconfig file could not be read, parsed or used.
    #[error("kubeconfig `{path}`: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write kubeconfig `{path}`: {source}; the existing file was left unchanged")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// AWS EKS DescribeCluster failed.
    #[error("EKS DescribeCluster `{cluster}` in {region} failed: {message}")]
    Describe {
        /// The cluster.
        cluster: String,
        /// The region.
        region: String,
        /// The SDK's message.
        message: String,
    },
    /// kube-rs refused the configuration.
    #[error("cannot build a Kubernetes client for {endpoint}: {message}")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// kube's message.
        message: String,
    },
}

/// The endpoint and CA of a cluster, or an error naming the output to set.
pub(crate) fn endpoint_and_ca(
    facts: &ClusterFacts,
) -> Result<(&crate::facts::Endpoint, &crate::facts::CaBundle), KubeconfigError> {
    let missing = |what: &'static str, key: &str| KubeconfigError::MissingFact {
        cluster: facts.name.clone(),
        what,
        hint: format!("set {}", facts.source_of(key)),
    };
    let endpoint = facts
        .endpoint
        .as_ref()
        .ok_or_else(|| missing("API server endpoint", keys::CLUSTER_ENDPOINT))?;
    let ca = facts
        .ca
        .as_ref()
        .ok_or_else(|| missing("CA certificate", keys::CLUSTER_CA))?;
    Ok((endpoint, ca))
}

/// How the `tendril token …` of a kubeconfig authenticates where it is not
/// left to its environment at run time, and what an embedded token is made
/// with. Each provider reads its own fields; unset fields fall back to the
/// provider's environment variables.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions {
    /// AWS: the region (else the facts' region, the cluster ARN's, `AWS_REGION`).
    pub region: Option<String>,
    /// AWS: a role to assume (STS AssumeRole).
    pub role_arn: Option<String>,
    /// GCP: a credential file (else `GOOGLE_APPLICATION_CREDENTIALS`).
    pub gcp_credentials: Option<PathBuf>,
    /// Azure: the tenant (else `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Azure: the client (else `AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
}

/// Fills what a kubeconfig for `cluster` needs and the provider can tell
/// without credentials (EKS: the region).
pub fn prepare(cluster: &mut ClusterFacts, options: &TokenOptions) -> Result<(), KubeconfigError> {
    match cluster.provider {
        Provider::Aws => eks::prepare(cluster, options)?,
        Provider::Gcp => {}
        Provider::Azure => {}
    }
    Ok(())
}

/// Credentials for `cluster` from the environment and `options`, for a
/// command that has no job (`tendril kubeconfig`).
pub async fn session(
    cluster: &ClusterFacts,
    options: &TokenOptions,
) -> Result<Session, KubeconfigError> {
    Ok(match cluster.provider {
        Provider::Aws => eks::session(cluster, options).await?.into(),
        Provider::Gcp => gke::session(options)?.into(),
        Provider::Azure => aks::session(options)?.into(),
    })
}

/// The source of bearer tokens for `cluster` with `session`, after filling
/// in what the outputs left out and the provider looks up (EKS
/// DescribeCluster: endpoint, CA, ARN, region).
pub async fn token_source(
    cluster: &mut ClusterFacts,
    session: &Session,
) -> Result<Box<dyn TokenSource>, KubeconfigError> {
    Ok(match session {
        Session::Aws(credentials) => Box::new(eks::token_source(cluster, credentials).await?),
        Session::Gcp(source) => Box::new(gke::token_source(source.clone())?),
        Session::Azure(identity) => Box::new(aks::token_source(identity.clone())),
    })
}

/// The `tendril token …` arguments of the exec plugin that a kubeconfig for
/// this cluster runs.
pub fn exec_args(cluster: &ClusterFacts, options: &TokenOptions) -> Vec<String> {
    match cluster.provider {
        Provider::Aws => eks::exec_args(cluster, options),
        Provider::Gcp => gke::exec_args(options),
        Provider::Azure => aks::exec_args(options),
    }
}

/// The default name of a kubeconfig's context, cluster and user entries for
/// `cluster` (EKS: the cluster ARN, as the aws CLI names it; else the name).
pub fn context_name(cluster: &ClusterFacts) -> String {
    match cluster.provider {
        Provider::Aws => eks::context_name(cluster),
        Provider::Gcp => cluster.name.clone(),
        Provider::Azure => cluster.name.clone(),
    }
}

/// Builds a kube-rs client for the cluster in `facts` whose requests carry a
/// bearer token from `tokens`. Tokens are cached and replaced two minutes
/// before they expire. Nothing is sent over the network here; call
/// [`verify_access`] to check endpoint, CA and token at once.
///
/// Call it inside a Tokio runtime (kube-rs starts a worker task), and use the
/// client in that same runtime.
pub fn client_for_cluster(
    facts: &ClusterFacts,
    tokens: impl TokenSource + 'static,
) -> Result<kube::Client, KubeconfigError> {
    let (endpoint, ca) = endpoint_and_ca(facts)?;
    let bad_endpoint = |reason: String| KubeconfigError::BadFact {
        source_name: facts.source_of(keys::CLUSTER_ENDPOINT),
        reason,
    };
    let bad_ca = |reason: String| KubeconfigError::BadFact {
        source_name: facts.source_of(keys::CLUSTER_CA),
        reason,
    };
    let uri: http::Uri = endpoint
        .as_str()
        .parse()
        .map_err(|e| bad_endpoint(format!("`{endpoint}` is not a URL ({e})")))?;
    let mut roots = Vec::new();
    for cert in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        let cert = cert.map_err(|e| bad_ca(format!("the PEM does not parse ({e})")))?;
        roots.push(cert.as_ref().to_vec());
    }
    if roots.is_empty() {
        return Err(bad_ca("it holds no certificate".into()));
    }
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(roots);
    config.accept_invalid_certs = false;
    config.connect_timeout = Some(Duration::from_secs(30));

    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(|e| bad_ca(format!("it is not a usable CA certificate ({e})")))?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, kube::client::Body>(https);
    let service = ServiceBuilder::new()
        .layer(crate::logging::RequestLogLayer)
        .layer(BearerLayer {
            tokens: Arc::new(CachedToken::new(tokens)),
        })
        .layer(config.base_uri_layer())
        .service(hyper);
    Ok(kube::client::ClientBuilder::new(service, config.default_namespace).build())
}

/// Checks endpoint, CA and token with one authenticated request (`GET /api`),
/// turning failures into errors that name the output that was wrong.
pub async fn verify_access(
    client: &kube::Client,
    facts: &ClusterFacts,
) -> Result<(), KubeconfigError> {
    let endpoint = facts
        .endpoint
        .as_ref()
        .map(|e| e.to_string())
        .unwrap_or_default();
    match client.list_core_api_versions().await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
            Err(KubeconfigError::Unauthorized {
                endpoint,
                provider: facts.provider.to_string(),
                status: status.code,
            })
        }
        Err(e) => {
            let detail = crate::errors::chain_inline(&e);
            let lower = detail.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("unknownissuer") {
                Err(KubeconfigError::CaMismatch {
                    endpoint,
                    ca_source: facts.source_of(keys::CLUSTER_CA),
                    detail,
                })
            } else {
                Err(KubeconfigError::Unreachable {
                    endpoint,
                    endpoint_source: facts.source_of(keys::CLUSTER_ENDPOINT),
                    detail,
                })
            }
        }
    }
}

/// How a client built from a kubeconfig connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long connecting (TCP and the TLS handshake) may take; a listener
    /// that never answers fails after this long.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl ClientOptions {
    /// Connecting may take at most `timeout` (and never more than the default 30 s).
    pub fn with_timeout(timeout: Duration) -> Self {
        ClientOptions {
            connect_timeout: timeout.min(ClientOptions::default().connect_timeout),
        }
    }
}

/// Reads a kubeconfig file.
pub fn read_kubeconfig(path: &Path) -> Result<kube::config::Kubeconfig, KubeconfigError> {
    let err = |reason: String| KubeconfigError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    // the file itself first, so that the message is about the file
    std::fs::File::open(path).map_err(|e| {
        err(format!(
            "cannot be read ({e}); give the path of a readable kubeconfig file"
        ))
    })?;
    kube::config::Kubeconfig::read_from(path).map_err(|e| {
        err(format!(
            "is not a valid kubeconfig ({})",
            crate::errors::chain_inline(&e)
        ))
    })
}

/// Checks what can be known about a kubeconfig without contacting the
/// cluster: the context exists and names a cluster with a server; TLS is
/// verified (no `insecure-skip-tls-verify`); the CA, when given, is X.509;
/// and no credential (bearer token, token file, client key, exec plugin,
/// auth provider, password) would travel over plain `http://`.
pub fn check_kubeconfig(
    kubeconfig: &kube::config::Kubeconfig,
    context: Option<&str>,
    label: &Path,
) -> Result<(), KubeconfigError> {
    let err = |reason: String| KubeconfigError::Kubeconfig {
        path: label.to_path_buf(),
        reason,
    };
    let names = |list: Vec<&str>| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let context_name = match context.or(kubeconfig.current_context.as_deref()) {
        Some(c) => c,
        None => {
            return Err(err(format!(
                "has no current-context; pass --context NAME (its contexts: {})",
                names(
                    kubeconfig
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect()
                )
            )));
        }
    };
    let ctx = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            err(format!(
                "has no context `{context_name}`; its contexts are {}: pass one with --context NAME",
                names(kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect())
            ))
        })?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            err(format!(
                "context `{context_name}` names cluster `{}`, which the file does not define",
                ctx.cluster
            ))
        })?;
    let server = cluster.server.as_deref().unwrap_or_default();
    if server.is_empty() {
        return Err(err(format!(
            "cluster `{}` has no server; give its https:// API server URL",
            ctx.cluster
        )));
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(err(format!(
            "cluster `{}` sets insecure-skip-tls-verify; tendril always verifies TLS: remove it and \
             give the cluster's certificate-authority-data",
            ctx.cluster
        )));
    }
    if let Some(data) = &cluster.certificate_authority_data {
        crate::facts::CaBundle::parse(data).map_err(|reason| {
            err(format!(
                "cluster `{}`: certificate-authority-data is not a CA certificate: {reason}",
                ctx.cluster
            ))
        })?;
    }
    if let Some(file) = &cluster.certificate_authority {
        let text = std::fs::read_to_string(file).map_err(|e| {
            err(format!(
                "cluster `{}`: cannot read certificate-authority {file}: {e}",
                ctx.cluster
            ))
        })?;
        crate::facts::CaBundle::parse(&text).map_err(|reason| {
            err(format!(
                "cluster `{}`: certificate-authority {file} is not a CA certificate: {reason}",
                ctx.cluster
            ))
        })?;
    }
    if server.to_ascii_lowercase().starts_with("http://") {
        let user = ctx.user.as_deref().unwrap_or_default();
        let auth = kubeconfig
            .auth_infos
            .iter()
            .find(|a| a.name == user)
            .and_then(|a| a.auth_info.as_ref());
        if let Some(credential) = auth.and_then(credential_kind) {
            return Err(err(format!(
                "cluster `{}` is served over plain http:// ({server}) and user `{user}` would send \
                 {credential} without TLS; tendril never sends credentials unencrypted: use the \
                 cluster's https:// endpoint with its certificate-authority-data",
                ctx.cluster
            )));
        }
    }
    Ok(())
}

/// The kind of credential a kubeconfig user sends, if any.
fn credential_kind(auth: &kube::config::AuthInfo) -> Option<&'static str> {
    if auth.token.is_some() || auth.token_file.is_some() {
        Some("a bearer token")
    } else if auth.client_key.is_some() || auth.client_key_data.is_some() {
        Some("a client certificate's key")
    } else if auth.exec.is_some() {
        Some("an exec plugin's credential")
    } else if auth.auth_provider.is_some() {
        Some("an auth provider's token")
    } else if auth.password.is_some() {
        Some("a password")
    } else {
        None
    }
}

/// The kube-rs configuration for a kubeconfig file (`None`: `$KUBECONFIG`,
/// else `~/.kube/config`, as [`KubeconfigSource::resolve`] picks) and context, after [`check_kubeconfig`]; its
/// connect timeout follows `options`.
pub async fn config_from_kubeconfig(
    path: Option<&Path>,
    context: Option<&str>,
    options: &ClientOptions,
) -> Result<kube::Config, KubeconfigError> {
    let source = KubeconfigSource::resolve(path)?;
    let kubeconfig = match path {
        Some(p) => read_kubeconfig(p)?,
        None => source.read()?,
    };
    config_from_kubeconfig_value(kubeconfig, context, source.primary(), options).await
}

async fn config_from_kubeconfig_value(
    kubeconfig: kube::config::Kubeconfig,
    context: Option<&str>,
    label: &Path,
    options: &ClientOptions,
) -> Result<kube::Config, KubeconfigError> {
    check_kubeconfig(&kubeconfig, context, label)?;
    let kube_options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
        .await
        .map_err(|e| KubeconfigError::Kubeconfig {
            path: label.to_path_buf(),
            reason: crate::errors::chain_inline(&e),
        })?;
    config.accept_invalid_certs = false;
    config.connect_timeout = Some(options.connect_timeout);
    Ok(config)
}

/// A client for a kubeconfig file a job gives (`tendril.kubernetes.kubeconfig`),
/// with its `context` or the current one, after [`check_kubeconfig`]. kube-rs
/// handles its auth (tokens, client certificates, exec plugins). Connecting
/// may take 30 s; [`client_from_kubeconfig_with`] sets another limit.
pub async fn client_from_kubeconfig(
    path: &Path,
    context: Option<&str>,
) -> Result<kube::Client, KubeconfigError> {
    client_from_kubeconfig_with(path, context, &ClientOptions::default()).await
}

/// [`client_from_kubeconfig`] with the connection settings of `options`.
pub async fn client_from_kubeconfig_with(
    path: &Path,
    context: Option<&str>,
    options: &ClientOptions,
) -> Result<kube::Client, KubeconfigError> {
    let kubeconfig = read_kubeconfig(path)?;
    client_from_kubeconfig_value(kubeconfig, context, path, options).await
}

/// A client for an in-memory kubeconfig (e.g. one fetched with
/// [`aks::local_account_kubeconfig`]); `label` names it in errors.
pub async fn client_from_kubeconfig_value(
    kubeconfig: kube::config::Kubeconfig,
    context: Option<&str>,
    label: &Path,
    options: &ClientOptions,
) -> Result<kube::Client, KubeconfigError> {
    let config = config_from_kubeconfig_value(kubeconfig, context, label, options).await?;
    client_from_config(config, label)
}

/// A client for a checked kube-rs configuration, carrying the request-log
/// layer every tendril client has; `label` names the kubeconfig in errors.
pub fn client_from_config(
    config: kube::Config,
    label: &Path,
) -> Result<kube::Client, KubeconfigError> {
    kube::client::ClientBuilder::try_from(config)
        .map(|b| b.with_layer(&crate::logging::RequestLogLayer).build())
        .map_err(|e| KubeconfigError::Kubeconfig {
            path: label.to_path_buf(),
            reason: crate::errors::chain_inline(&e),
        })
}

#[derive(Clone)]
struct BearerLayer {
    tokens: Arc<dyn TokenSource>,
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// Sets `Authorization: Bearer <token>` on every request, from a refreshing source.
#[derive(Clone)]
struct Bearer<S> {
    inner: S,
    tokens: Arc<dyn TokenSource>,
}

impl<S, B> Service<Request<B>> for Bearer<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // the ready inner service goes into the future; a clone stays for the next call
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            let token = tokens.fetch().await?;
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.token.expose()))
                .map_err(|_| {
                    BoxError::from("the token has characters not allowed in an HTTP header")
                })?;
            value.set_sensitive(true);
            req.headers_mut().insert(AUTHORIZATION, value);
            inner.call(req).await.map_err(Into::into)
        })
    }
}
