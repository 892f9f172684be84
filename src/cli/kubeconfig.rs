//! `tendril kubeconfig`: write a kubeconfig for the cluster in a Terraform
//! outputs document (or a facts file), merged into an existing file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use tendril::cloud::{Provider, TokenSource};
use tendril::facts::{ClusterFacts, InfraFacts, OutputMapping};
use tendril::kubeconfig::{
    self, KubeconfigSource, TokenOptions, UserAuth, kubeconfig_for_cluster, write_kubeconfig,
};

/// Flags of `tendril kubeconfig`.
#[derive(clap::Args)]
pub struct Args {
    /// `terraform output -json` of the infrastructure, or a facts file (JSON or YAML).
    #[arg(long)]
    facts: PathBuf,
    /// The kubeconfig to write (default: the first file in $KUBECONFIG, else
    /// ~/.kube/config); an existing file is merged (context added or replaced).
    #[arg(long, visible_alias = "output-file", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The cloud (default: guessed from the output names eks_/gke_/aks_).
    #[arg(long)]
    provider: Option<String>,
    /// Map a fact key to another output name (repeatable): `--map cluster_name=my_cluster`.
    #[arg(long = "map", value_name = "KEY=OUTPUT")]
    map: Vec<String>,
    /// The name of the context, cluster and user entries (default: the EKS
    /// cluster ARN, else the cluster name).
    #[arg(long)]
    context: Option<String>,
    /// Embed a token (valid 14 minutes for EKS, about an hour for GKE/AKS)
    /// instead of an exec plugin running `tendril token`.
    #[arg(long)]
    embed_token: bool,
    /// The command the exec plugin runs.
    #[arg(long, default_value = "tendril")]
    exec_command: String,
    /// AWS: the region (default: from the outputs or the cluster ARN).
    #[arg(long)]
    region: Option<String>,
    /// AWS: a role the token command assumes.
    #[arg(long)]
    role_arn: Option<String>,
    /// GCP: a credential file for the token command (else GOOGLE_APPLICATION_CREDENTIALS at run time).
    #[arg(long)]
    gcp_credentials: Option<PathBuf>,
    /// Azure: tenant for the token command (else AZURE_TENANT_ID at run time).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Azure: client for the token command (else AZURE_CLIENT_ID at run time).
    #[arg(long)]
    client_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot read facts file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("facts file `{path}` is neither JSON nor YAML: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "cannot tell the cloud from `{0}` (no single eks_/gke_/aks_ cluster output); pass --provider aws|gcp|azure"
    )]
    UnknownProvider(PathBuf),
    #[error("--map `{0}` is not KEY=OUTPUT")]
    BadMap(String),
    #[error(transparent)]
    Facts(#[from] tendril::facts::FactsError),
    #[error(transparent)]
    Kube(#[from] tendril::kubeconfig::KubeconfigError),
    #[error(transparent)]
    Cloud(#[from] tendril::cloud::CloudError),
}

/// Runs `tendril kubeconfig`.
pub fn run(args: Args) -> ExitCode {
    match super::runtime().block_on(write(args)) {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(&e),
    }
}

fn load_cluster(args: &Args) -> Result<ClusterFacts, CliError> {
    let text = std::fs::read_to_string(&args.facts).map_err(|source| CliError::Read {
        path: args.facts.clone(),
        source,
    })?;
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(json_err) => serde_saphyr::from_str(&text).map_err(|yaml_err| CliError::Parse {
            path: args.facts.clone(),
            reason: format!("JSON: {json_err}; YAML: {yaml_err}"),
        })?,
    };
    // a facts file: {cluster: {provider, name, ...}, ...}
    if value["cluster"]["name"].is_string() && value["cluster"]["provider"].is_string() {
        let facts: InfraFacts = serde_json::from_value(value).map_err(|e| CliError::Parse {
            path: args.facts.clone(),
            reason: format!("not a valid facts file: {e}"),
        })?;
        return Ok(facts.cluster);
    }
    let provider = match &args.provider {
        Some(p) => p.parse::<Provider>()?,
        None => InfraFacts::detect_provider(&value)
            .ok_or_else(|| CliError::UnknownProvider(args.facts.clone()))?,
    };
    let mut overrides = BTreeMap::new();
    for m in &args.map {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| CliError::BadMap(m.clone()))?;
        overrides.insert(k.trim().to_string(), v.trim().to_string());
    }
    let mapping = OutputMapping::with_overrides(provider, &overrides)?;
    Ok(InfraFacts::from_outputs(provider, &value, &mapping)?.cluster)
}

async fn write(args: Args) -> Result<String, CliError> {
    let target = KubeconfigSource::resolve(args.kubeconfig.as_deref())?;
    let mut cluster = load_cluster(&args)?;
    let options = TokenOptions {
        region: args.region.clone(),
        role_arn: args.role_arn.clone(),
        gcp_credentials: args.gcp_credentials.clone(),
        tenant_id: args.tenant_id.clone(),
        client_id: args.client_id.clone(),
    };
    kubeconfig::prepare(&mut cluster, &options)?;
    let lookup = cluster.provider.outputs().endpoint_lookup
        && (cluster.endpoint.is_none() || cluster.ca.is_none());
    let mut embedded = None;
    if lookup || args.embed_token {
        // credentials now: to look the cluster up, or for the embedded token
        let session = kubeconfig::session(&cluster, &options).await?;
        let tokens = kubeconfig::token_source(&mut cluster, &session).await?;
        if args.embed_token {
            embedded = Some(tokens.fetch().await?.token);
        }
    }
    let auth = match embedded {
        Some(token) => UserAuth::Token(token),
        None => UserAuth::Exec {
            command: args.exec_command.clone(),
            args: kubeconfig::exec_args(&cluster, &options),
        },
    };
    let context = args
        .context
        .clone()
        .unwrap_or_else(|| kubeconfig::context_name(&cluster));
    let kubeconfig = kubeconfig_for_cluster(&cluster, &context, &auth)?;
    let target = target.primary();
    create_parent(target)?;
    write_kubeconfig(target, kubeconfig)?;
    Ok(format!(
        "wrote context `{context}` for {} cluster `{}` to {}{}",
        cluster.provider,
        cluster.name,
        target.display(),
        if args.embed_token {
            " (embedded token: it expires; use the exec plugin for long use)"
        } else {
            ""
        }
    ))
}

/// Creates the directory a kubeconfig goes into (`~/.kube` on a fresh
/// machine), private to the user as kubectl makes it.
fn create_parent(path: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| {
                CliError::Kube(tendril::kubeconfig::KubeconfigError::Write {
                    path: path.to_path_buf(),
                    source,
                })
            }),
        _ => Ok(()),
    }
}
