//! Files a job writes into its output directory (`--out-dir`): the report,
//! the rendered manifests, the kubeconfig. Written whole or not at all
//! ([`crate::outfile`]); [`Mode::Secret`] (0600) when they may hold a secret.

use std::path::{Path, PathBuf};

use crate::outfile::{self, Mode, OutfileError};

/// Writes `name` into `dir` (created if missing) and returns its path.
pub fn write(dir: &Path, name: &str, bytes: &[u8], mode: Mode) -> Result<PathBuf, OutfileError> {
    std::fs::create_dir_all(dir).map_err(|source| OutfileError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(name);
    outfile::write(&path, bytes, mode)?;
    Ok(path)
}
