//! `tendril token`: print a Kubernetes ExecCredential (kubectl exec plugin).
//!
//! `tendril token eks` is a drop-in for `aws eks get-token`. With static
//! credentials in the environment and no role to assume it signs the token
//! without starting an async runtime or reading any file, so it takes a few
//! milliseconds.

use std::process::ExitCode;
use std::time::SystemTime;

use tendril::cloud::aws::{self, AwsOptions, AwsRole};
use tendril::cloud::azure::{AzureCredential, AzureIdentity};
use tendril::cloud::gcp::GcpCredentialSource;
use tendril::cloud::{AccessToken, CloudError, TokenSource, rfc3339_seconds};
use tendril::kubeconfig::{aks, eks, gke};

/// Flags of `tendril token`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cloud: Cloud,
}

#[derive(clap::Subcommand)]
enum Cloud {
    /// An EKS token, as `aws eks get-token` prints it.
    Eks(EksArgs),
    /// A GKE token: a GCP access token from `GOOGLE_APPLICATION_CREDENTIALS`
    /// (service-account key or workload identity federation config).
    Gke(GkeArgs),
    /// An AKS token: an Azure AD token for the AKS server application.
    Aks(AksArgs),
}

#[derive(clap::Args)]
struct EksArgs {
    /// The EKS cluster name.
    #[arg(long, visible_alias = "cluster-name")]
    cluster: String,
    /// The region (else AWS_REGION / AWS_DEFAULT_REGION / the profile).
    #[arg(long)]
    region: Option<String>,
    /// A role to assume first (STS AssumeRole).
    #[arg(long)]
    role_arn: Option<String>,
    /// The external ID the role's trust policy requires.
    #[arg(long, env = "TENDRIL_AWS_EXTERNAL_ID", hide_env_values = true)]
    external_id: Option<String>,
    /// The STS session name when assuming a role.
    #[arg(long, default_value = "tendril-token")]
    session_name: String,
    /// Another endpoint for AWS APIs (used for STS AssumeRole only; the token
    /// always names the regional STS endpoint the cluster verifies with).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

#[derive(clap::Args)]
struct GkeArgs {
    /// A credential file (service-account key or external_account config);
    /// default: GOOGLE_APPLICATION_CREDENTIALS.
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    credentials: std::path::PathBuf,
}

#[derive(clap::Args)]
struct AksArgs {
    /// The Entra tenant ID.
    #[arg(long, env = "AZURE_TENANT_ID")]
    tenant_id: String,
    /// The app registration / managed identity client ID.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    client_id: String,
    /// A file with the federated client assertion (workload identity token).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    federated_token_file: Option<std::path::PathBuf>,
    /// The authority host (default https://login.microsoftonline.com).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    authority_host: Option<String>,
    /// The client secret, from this environment variable only.
    #[arg(long = "client-secret-env", default_value = "AZURE_CLIENT_SECRET")]
    client_secret_env: String,
}

/// Runs `tendril token`.
pub fn run(args: Args) -> ExitCode {
    let result = match args.cloud {
        Cloud::Eks(a) => eks_token(a),
        Cloud::Gke(a) => gke_token(a),
        Cloud::Aks(a) => aks_token(a),
    };
    match result {
        Ok(token) => {
            println!("{}", exec_credential(&token));
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(&e),
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime, CloudError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CloudError::InvalidInput {
            input: "runtime".into(),
            reason: e.to_string(),
        })
}

fn eks_token(a: EksArgs) -> Result<AccessToken, CloudError> {
    let region_arg = a.region.clone().or_else(aws::region_from_env);
    // fast path: static credentials in the environment, nothing to assume
    if a.role_arn.is_none()
        && let (Some(creds), Some(region)) = (aws::env_credentials(), region_arg.as_deref())
    {
        return eks::token(&creds, region, &a.cluster, SystemTime::now());
    }
    let role = a
        .role_arn
        .as_deref()
        .map(|arn| AwsRole::new(arn, a.external_id.clone().map(Into::into), &a.session_name))
        .transpose()?;
    let options = AwsOptions {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        ..Default::default()
    };
    current_thread()?.block_on(async {
        let creds = aws::session(&options, role.as_ref()).await?;
        let region = creds.region().to_string();
        eks::EksTokenSource::new(creds, &a.cluster, &region)
            .fetch()
            .await
    })
}

fn gke_token(a: GkeArgs) -> Result<AccessToken, CloudError> {
    let source = GcpCredentialSource::from_file(&a.credentials)?;
    current_thread()?.block_on(async { gke::token_source(source)?.fetch_token().await })
}

fn aks_token(a: AksArgs) -> Result<AccessToken, CloudError> {
    let secret = std::env::var(&a.client_secret_env).ok().map(Into::into);
    let credential = AzureCredential::choose(a.federated_token_file, secret).ok_or_else(|| {
        CloudError::NoCredentials {
            provider: "azure",
            hint: format!(
                "pass --federated-token-file (or set AZURE_FEDERATED_TOKEN_FILE), or set {}",
                a.client_secret_env
            ),
        }
    })?;
    let identity = AzureIdentity {
        tenant_id: a.tenant_id,
        client_id: a.client_id,
        credential,
        authority_host: a.authority_host,
    };
    current_thread()?.block_on(aks::token_source(identity).fetch())
}

/// The ExecCredential JSON kubectl expects from an exec plugin. The API
/// version follows `KUBERNETES_EXEC_INFO` when kubectl sets it.
fn exec_credential(token: &AccessToken) -> String {
    let api_version = std::env::var("KUBERNETES_EXEC_INFO")
        .ok()
        .and_then(|info| serde_json::from_str::<serde_json::Value>(&info).ok())
        .and_then(|v| v["apiVersion"].as_str().map(str::to_string))
        .filter(|v| v.starts_with("client.authentication.k8s.io/"))
        .unwrap_or_else(|| "client.authentication.k8s.io/v1beta1".to_string());
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": {},
        "status": {
            "expirationTimestamp": rfc3339_seconds(token.expires_at),
            "token": token.token.expose(),
        }
    })
    .to_string()
}
