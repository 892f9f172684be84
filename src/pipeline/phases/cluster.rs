//! From terraform outputs to the cluster: infrastructure facts
//! ([`facts_from`]) and the kube client, built natively with the job's cloud
//! session ([`client_for`]) or from a given kubeconfig. No cloud CLI runs.

use std::path::Path;

use serde_json::{Value, json};

use super::preflight::KubeconfigRef;
use crate::cloud::Session;
use crate::facts::{InfraFacts, OutputMapping};
use crate::job::{JobFile, VineConfig};
use crate::kubeconfig::{self, KubeconfigError, TokenOptions, UserAuth};
use crate::terraform::Outputs;

/// Why the cluster could not be reached, or its facts not read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Facts could not be read from the outputs.
    #[error("{0}")]
    Facts(String),
    /// The cluster could not be reached.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// A cluster token source could not be built.
    #[error(transparent)]
    Cloud(#[from] crate::cloud::CloudError),
    /// The run needs a cluster and the cloud identity gives no credentials.
    #[error(
        "cloud identity `local` gives no cluster credentials: give a kubeconfig (tendril.kubernetes.kubeconfig in the job, or --kubeconfig)"
    )]
    NoCredentials,
}

/// Infrastructure facts from the outputs, with the job's mapping overrides.
pub fn facts_from(
    job: &JobFile,
    vine: &VineConfig,
    outputs: &Outputs,
) -> Result<InfraFacts, ClusterError> {
    let doc = Value::Object(
        outputs
            .0
            .iter()
            .map(|(k, o)| {
                (
                    k.clone(),
                    json!({"value": o.expose(), "sensitive": o.is_sensitive()}),
                )
            })
            .collect(),
    );
    let provider = vine
        .provider
        .or_else(|| InfraFacts::detect_provider(&doc))
        .ok_or_else(|| {
        ClusterError::Facts(
            "config_snapshot.provider is local and the outputs look like no known cloud's (no eks_/gke_/aks_ cluster outputs); map them with tendril.outputs".into(),
        )
    })?;
    let mapping = OutputMapping::with_overrides(provider, &job.tendril.outputs)
        .map_err(|e| ClusterError::Facts(format!("tendril.outputs: {e}")))?;
    let mut facts = InfraFacts::from_outputs(provider, &doc, &mapping)
        .map_err(|e| ClusterError::Facts(e.to_string()))?;
    if facts.cluster.region.is_none() {
        facts.cluster.region = Some(vine.region.clone());
    }
    Ok(facts)
}

/// How to reach the cluster: a given kubeconfig wins; else the facts'
/// endpoint and CA with the cloud session's native token.
#[derive(Clone, Copy)]
pub struct ClusterAccess<'a> {
    /// A kubeconfig given for the run (flag or job), already checked.
    pub kubeconfig: Option<&'a KubeconfigRef>,
    /// The job's cloud session (`None`: cloud identity `local`).
    pub session: Option<&'a Session>,
    /// The cluster's facts.
    pub facts: &'a InfraFacts,
}

/// A verified client for the cluster (its access checked with one request).
pub async fn client_for(access: ClusterAccess<'_>) -> Result<kube::Client, ClusterError> {
    if let Some(k) = access.kubeconfig {
        return Ok(kubeconfig::client_from_kubeconfig(&k.path, k.context.as_deref()).await?);
    }
    let session = access.session.ok_or(ClusterError::NoCredentials)?;
    let mut cluster = access.facts.cluster.clone();
    let tokens = kubeconfig::token_source(&mut cluster, session).await?;
    let client = kubeconfig::client_for_cluster(&cluster, tokens)?;
    kubeconfig::verify_access(&client, &cluster).await?;
    Ok(client)
}

/// Writes a kubeconfig for people into `dir` (`dir/kubeconfig`, merged into
/// an existing one, 0600) whose user runs `tendril token …`. Nothing is
/// written when the facts lack the endpoint or the CA.
pub fn write_kubeconfig_for_people(dir: &Path, facts: &InfraFacts) -> Result<(), KubeconfigError> {
    if facts.cluster.endpoint.is_none() || facts.cluster.ca.is_none() {
        return Ok(());
    }
    let kc = kubeconfig::kubeconfig_for_cluster(
        &facts.cluster,
        &facts.cluster.name,
        &UserAuth::Exec {
            command: "tendril".into(),
            args: kubeconfig::exec_args(&facts.cluster, &TokenOptions::default()),
        },
    )?;
    kubeconfig::write_kubeconfig(&dir.join("kubeconfig"), kc)
}
