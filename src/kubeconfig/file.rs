//! Kubeconfig files: one cluster's entries, merged into an existing file, written atomically.

use std::path::Path;

use kube::config::{
    AuthInfo, Cluster, Context, ExecConfig, ExecInteractiveMode, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};

use super::{KubeconfigError, endpoint_and_ca};
use crate::Secret;
use crate::facts::ClusterFacts;

/// How the kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum UserAuth {
    /// An exec plugin (`tendril token eks ...`) that prints an ExecCredential.
    Exec {
        /// The command (`tendril`, or an absolute path).
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A bearer token embedded in the file (valid only until it expires).
    Token(Secret<String>),
}

/// A kubeconfig with one cluster, user and context, all named `context`,
/// with `current-context` set to it.
pub fn kubeconfig_for_cluster(
    facts: &ClusterFacts,
    context: &str,
    auth: &UserAuth,
) -> Result<Kubeconfig, KubeconfigError> {
    let (endpoint, ca) = endpoint_and_ca(facts)?;
    let cluster = Cluster {
        server: Some(endpoint.to_string()),
        certificate_authority_data: Some(ca.base64()),
        ..Default::default()
    };
    let user = match auth {
        UserAuth::Exec { command, args } => AuthInfo {
            exec: Some(ExecConfig {
                api_version: Some("client.authentication.k8s.io/v1beta1".into()),
                command: Some(command.clone()),
                args: Some(args.clone()),
                env: None,
                drop_env: None,
                interactive_mode: Some(ExecInteractiveMode::Never),
                provide_cluster_info: false,
                cluster: None,
                install_hint: Some(
                    "tendril prints this cluster's token: install the tendril binary on PATH"
                        .into(),
                ),
                other: Default::default(),
            }),
            ..Default::default()
        },
        UserAuth::Token(token) => AuthInfo {
            token: Some(token.expose().clone().into()),
            ..Default::default()
        },
    };
    Ok(Kubeconfig {
        clusters: vec![NamedCluster {
            name: context.into(),
            cluster: Some(cluster),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: context.into(),
            auth_info: Some(user),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: context.into(),
            context: Some(Context {
                cluster: context.into(),
                user: Some(context.into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(context.into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    })
}

/// Adds `new`'s clusters, users and contexts to `existing`, replacing entries
/// of the same name; `new`'s current context becomes the current one.
pub fn merge(mut existing: Kubeconfig, new: Kubeconfig) -> Kubeconfig {
    for c in new.clusters {
        existing.clusters.retain(|e| e.name != c.name);
        existing.clusters.push(c);
    }
    for u in new.auth_infos {
        existing.auth_infos.retain(|e| e.name != u.name);
        existing.auth_infos.push(u);
    }
    for x in new.contexts {
        existing.contexts.retain(|e| e.name != x.name);
        existing.contexts.push(x);
    }
    if new.current_context.is_some() {
        existing.current_context = new.current_context;
    }
    existing.api_version.get_or_insert_with(|| "v1".into());
    existing.kind.get_or_insert_with(|| "Config".into());
    existing
}

/// Merges `new` into the kubeconfig at `path` (created when absent) and
/// writes it atomically with mode 0600: a temporary file in the same
/// directory, synced, then renamed over the old one. On any error the old
/// file is left as it was.
pub fn write_kubeconfig(path: &Path, new: Kubeconfig) -> Result<(), KubeconfigError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Kubeconfig::from_yaml(&text).map_err(|e| KubeconfigError::Kubeconfig {
            path: path.to_path_buf(),
            reason: format!(
                "the existing file is not a valid kubeconfig ({e}); fix or move it, tendril will \
                 not overwrite it"
            ),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kubeconfig::default(),
        Err(source) => {
            return Err(KubeconfigError::Write {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let merged = merge(existing, new);
    let yaml = serde_saphyr::to_string(&merged).map_err(|e| KubeconfigError::Kubeconfig {
        path: path.to_path_buf(),
        reason: format!("cannot serialize the kubeconfig: {e}"),
    })?;
    crate::outfile::write(path, yaml.as_bytes(), crate::outfile::Mode::Secret).map_err(|e| {
        KubeconfigError::Write {
            path: path.to_path_buf(),
            source: match e {
                crate::outfile::OutfileError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        }
    })
}
