//! Which kubeconfig a command uses, chosen as kubectl and helm choose it:
//! `--kubeconfig FILE`, else `$KUBECONFIG` (one or more files separated by
//! `:`, merged, the first file winning), else `~/.kube/config`. Every command
//! that talks to a cluster, or writes a kubeconfig, goes through
//! [`KubeconfigSource::resolve`]; no test variable is ever read here.

use std::path::{Path, PathBuf};

use super::{ClientOptions, KubeconfigError, client_from_kubeconfig_value};

/// The variable kubectl reads, and so does tendril.
pub const KUBECONFIG_ENV: &str = "KUBECONFIG";

/// Where the kubeconfig comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// `--kubeconfig FILE`.
    Flag(PathBuf),
    /// `$KUBECONFIG`: its files, in order (empty entries dropped).
    Env(Vec<PathBuf>),
    /// `~/.kube/config` (from `$HOME`).
    Home(PathBuf),
}

impl KubeconfigSource {
    /// The kubeconfig for a command given `flag` (`--kubeconfig`), else
    /// `$KUBECONFIG`, else `~/.kube/config`. Fails only when none of them
    /// names a file (no flag, `KUBECONFIG` unset or empty, no `HOME`).
    pub fn resolve(flag: Option<&Path>) -> Result<KubeconfigSource, KubeconfigError> {
        if let Some(path) = flag {
            return Ok(KubeconfigSource::Flag(path.to_path_buf()));
        }
        if let Some(value) = std::env::var_os(KUBECONFIG_ENV) {
            let files: Vec<PathBuf> = std::env::split_paths(&value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            if !files.is_empty() {
                return Ok(KubeconfigSource::Env(files));
            }
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => Ok(KubeconfigSource::Home(
                PathBuf::from(home).join(".kube").join("config"),
            )),
            None => Err(KubeconfigError::Kubeconfig {
                path: PathBuf::from("~/.kube/config"),
                reason: "no kubeconfig: --kubeconfig is not given, KUBECONFIG is unset and HOME \
                         is not set; pass --kubeconfig FILE or set KUBECONFIG"
                    .into(),
            }),
        }
    }

    /// The files, in order.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            KubeconfigSource::Flag(p) | KubeconfigSource::Home(p) => std::slice::from_ref(p),
            KubeconfigSource::Env(files) => files,
        }
    }

    /// The file a new or changed kubeconfig is written to: the first one.
    pub fn primary(&self) -> &Path {
        // `resolve` never builds an empty `Env`
        self.files()
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(".kube/config"))
    }

    /// Whether at least one of the files exists.
    pub fn exists(&self) -> bool {
        self.files().iter().any(|p| p.is_file())
    }

    /// Where it came from, for messages: `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`.
    pub fn origin(&self) -> &'static str {
        match self {
            KubeconfigSource::Flag(_) => "--kubeconfig",
            KubeconfigSource::Env(_) => "$KUBECONFIG",
            KubeconfigSource::Home(_) => "~/.kube/config",
        }
    }

    /// Reads the kubeconfig. `$KUBECONFIG`'s files are merged as kubectl
    /// merges them (the first file that sets a value wins) and files it names
    /// that do not exist are skipped; a file named by `--kubeconfig` or
    /// `~/.kube/config` must exist.
    pub fn read(&self) -> Result<kube::config::Kubeconfig, KubeconfigError> {
        let read = |path: &Path| {
            kube::config::Kubeconfig::read_from(path).map_err(|e| KubeconfigError::Kubeconfig {
                path: path.to_path_buf(),
                reason: format!(
                    "{} (from {})",
                    crate::errors::chain_inline(&e),
                    self.origin()
                ),
            })
        };
        let existing: Vec<&PathBuf> = match self {
            KubeconfigSource::Env(files) => files.iter().filter(|p| p.is_file()).collect(),
            other => other.files().iter().collect(),
        };
        let mut merged: Option<kube::config::Kubeconfig> = None;
        for path in &existing {
            let next = read(path)?;
            merged = Some(match merged {
                None => next,
                Some(m) => m.merge(next).map_err(|e| KubeconfigError::Kubeconfig {
                    path: path.to_path_buf(),
                    reason: format!(
                        "cannot merge it into $KUBECONFIG: {}",
                        crate::errors::chain_inline(&e)
                    ),
                })?,
            });
        }
        merged.ok_or_else(|| KubeconfigError::Kubeconfig {
            path: self.primary().to_path_buf(),
            reason: "none of the files $KUBECONFIG names exists; pass --kubeconfig FILE".into(),
        })
    }

    /// A Kubernetes client for `context` (default: the current context) of
    /// this kubeconfig, with the checks of [`client_from_kubeconfig_value`]
    /// and the connection settings of `options`.
    pub async fn client(
        &self,
        context: Option<&str>,
        options: &ClientOptions,
    ) -> Result<kube::Client, KubeconfigError> {
        client_from_kubeconfig_value(self.read()?, context, self.primary(), options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_everything() {
        let source = KubeconfigSource::resolve(Some(Path::new("/tmp/kc"))).expect("resolves");
        assert_eq!(source, KubeconfigSource::Flag(PathBuf::from("/tmp/kc")));
        assert_eq!(source.primary(), Path::new("/tmp/kc"));
        assert_eq!(source.origin(), "--kubeconfig");
    }

    #[test]
    fn a_missing_flag_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("nope.yaml");
        let err = KubeconfigSource::Flag(path.clone())
            .read()
            .expect_err("the file does not exist");
        let text = err.to_string();
        assert!(
            text.contains("nope.yaml") && text.contains("--kubeconfig"),
            "{text}"
        );
    }

    #[test]
    fn env_files_merge_in_order_and_missing_ones_are_skipped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        let doc = |name: &str, current: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: {name}\n  cluster:\n    server: https://{name}.example:6443\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\nusers:\n- name: {name}\n  user:\n    token: t\n"
            )
        };
        std::fs::write(&first, doc("one", "one")).expect("write");
        std::fs::write(&second, doc("two", "two")).expect("write");
        let source = KubeconfigSource::Env(vec![first.clone(), dir.path().join("missing"), second]);
        let kc = source.read().expect("merges");
        assert_eq!(kc.current_context.as_deref(), Some("one"));
        let names: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(source.primary(), first.as_path());
        assert!(source.exists());
        let none = KubeconfigSource::Env(vec![dir.path().join("x")]);
        assert!(!none.exists());
        assert!(none.read().is_err());
    }
}
