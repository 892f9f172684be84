//! Plan artifacts: a saved plan (`plan.tfplan`) plus its manifest, stored in
//! Supabase Storage, any S3-compatible bucket, or a local directory.
//!
//! Layout (`{job}` is the PLAN job's id):
//!
//! ```text
//! {prefix}{job}/plan.tfplan     the saved plan, byte for byte
//! {prefix}{job}/manifest.json   the manifest below, written after the plan
//! ```
//!
//! A PLAN job uploads under its own id; a DEPLOY job downloads by its
//! `plan_job_id`, checks the plan's size and sha256 against the manifest
//! (a corrupt or truncated plan is refused), caps the download size, and then
//! compares the manifest's config hash with the configuration's own
//! ([`Artifact::check_config`]) before any terraform command runs.

pub mod s3;
pub mod store;
pub mod supabase;

pub use s3::{S3Credentials, S3Store};
pub use store::{LocalStore, Store};
pub use supabase::SupabaseStore;

use crate::confighash::{ConfigHash, StalePlan, check_plan_freshness};
use crate::terraform::ChangeSummary;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The object name of the saved plan inside an artifact.
pub const PLAN_FILE: &str = "plan.tfplan";
/// The object name of the manifest inside an artifact.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Default cap on a downloaded plan's size (256 MiB).
pub const DEFAULT_MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;
/// Cap on a manifest's size (1 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// What can go wrong storing or fetching an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A job id cannot be used as a storage path.
    #[error(
        "job id `{id}` cannot name a plan artifact: use letters, digits, `-`, `_` and `.` only (a UUID, as the control plane gives)"
    )]
    InvalidJobId {
        /// The id.
        id: String,
    },
    /// The store's settings are incomplete or wrong.
    #[error("artifact store setting `{field}` {problem}")]
    Config {
        /// The job field.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The artifact (or one of its objects) does not exist.
    #[error(
        "plan artifact not found at {location}; check plan_job_id and tendril.artifacts (was the PLAN job run against this store?)"
    )]
    NotFound {
        /// Where it was looked for.
        location: String,
    },
    /// The store refused the credentials.
    #[error(
        "the artifact store refused access to {location} (HTTP {status}): {body}; check the service key / credentials"
    )]
    Unauthorised {
        /// The object.
        location: String,
        /// HTTP status.
        status: u16,
        /// The store's answer (trimmed).
        body: String,
    },
    /// The store answered with an unexpected status.
    #[error("the artifact store answered HTTP {status} for {location}: {body}")]
    Http {
        /// The object.
        location: String,
        /// HTTP status.
        status: u16,
        /// The store's answer (trimmed).
        body: String,
    },
    /// The store could not be reached.
    #[error("cannot reach the artifact store for {location}: {source}")]
    Transport {
        /// The object.
        location: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// An object is larger than allowed.
    #[error("{location} is larger than the {limit}-byte cap; refusing to download it")]
    TooLarge {
        /// The object.
        location: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What tendril was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid.
    #[error("the manifest at {location} is not valid: {problem}")]
    ManifestInvalid {
        /// The manifest's location.
        location: String,
        /// What is wrong.
        problem: String,
    },
    /// The plan is shorter than the manifest says.
    #[error(
        "the plan at {location} is truncated: {actual} bytes, the manifest says {expected}; re-run the PLAN job"
    )]
    Truncated {
        /// The plan's location.
        location: String,
        /// Size from the manifest.
        expected: u64,
        /// Size downloaded.
        actual: u64,
    },
    /// The plan's digest does not match the manifest.
    #[error(
        "the plan at {location} is corrupt: its sha256 is {actual}, the manifest says {expected}; re-run the PLAN job"
    )]
    DigestMismatch {
        /// The plan's location.
        location: String,
        /// Digest from the manifest.
        expected: String,
        /// Digest of the downloaded bytes.
        actual: String,
    },
    /// A request could not be signed.
    #[error("cannot sign the S3 request for {location}: {problem}")]
    Signing {
        /// The object.
        location: String,
        /// What failed.
        problem: String,
    },
}

/// What a plan artifact says about its plan (`manifest.json`, stored next to
/// `plan.tfplan`): who made it from which configuration, its digest and size,
/// the terraform version and what it will change. Not a Kubernetes manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanManifest {
    /// Manifest format, [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The PLAN job that made the plan.
    pub job_id: String,
    /// Hash of the configuration snapshot the plan was made from.
    pub config_hash: ConfigHash,
    /// Lowercase hex sha256 of `plan.tfplan`.
    pub plan_sha256: String,
    /// Size of `plan.tfplan` in bytes.
    pub plan_size: u64,
    /// The terraform version that made the plan (apply needs the same).
    pub terraform_version: String,
    /// When the artifact was made (RFC 3339, UTC).
    pub created_at: jiff::Timestamp,
    /// What the plan will change.
    pub change_summary: ChangeSummary,
}

impl PlanManifest {
    /// A manifest for `plan`, stamped now.
    pub fn new(
        job_id: &str,
        config_hash: ConfigHash,
        plan: &[u8],
        terraform_version: impl Into<String>,
        change_summary: ChangeSummary,
    ) -> PlanManifest {
        PlanManifest {
            format_version: FORMAT_VERSION,
            job_id: job_id.to_string(),
            config_hash,
            plan_sha256: sha256_hex(plan),
            plan_size: plan.len() as u64,
            terraform_version: terraform_version.into(),
            created_at: jiff::Timestamp::now(),
            change_summary,
        }
    }
}

/// A downloaded, verified artifact.
#[derive(Clone)]
pub struct Artifact {
    /// The manifest.
    pub manifest: PlanManifest,
    /// The saved plan's bytes (verified against the manifest).
    pub plan: Vec<u8>,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("manifest", &self.manifest)
            .field("plan_bytes", &self.plan.len())
            .finish()
    }
}

impl Artifact {
    /// Refuses the plan when the configuration changed since it was made.
    pub fn check_config(&self, current: &ConfigHash) -> Result<(), StalePlan> {
        check_plan_freshness(current, &self.manifest.config_hash)
    }

    /// Writes the plan to `path` (atomically).
    pub fn write_plan(&self, path: &Path) -> Result<(), ArtifactError> {
        write_atomic(path, &self.plan)
    }
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `plan` against the manifest's size and digest.
pub fn verify_plan(
    plan: &[u8],
    manifest: &PlanManifest,
    location: &str,
) -> Result<(), ArtifactError> {
    let actual = plan.len() as u64;
    if actual < manifest.plan_size {
        return Err(ArtifactError::Truncated {
            location: location.to_string(),
            expected: manifest.plan_size,
            actual,
        });
    }
    let digest = sha256_hex(plan);
    if actual != manifest.plan_size || !digest.eq_ignore_ascii_case(&manifest.plan_sha256) {
        return Err(ArtifactError::DigestMismatch {
            location: location.to_string(),
            expected: manifest.plan_sha256.clone(),
            actual: digest,
        });
    }
    Ok(())
}

/// Checks that a job id is safe as a path segment.
pub fn check_job_id(id: &str) -> Result<(), ArtifactError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::InvalidJobId { id: id.to_string() })
    }
}

/// Writes a file atomically and 0600 (a plan can hold secrets) with
/// [`crate::outfile::write`]; parent directories are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    crate::outfile::write(path, bytes, crate::outfile::Mode::Secret).map_err(|e| {
        ArtifactError::Io {
            action: "write",
            path: path.to_path_buf(),
            source: match e {
                crate::outfile::OutfileError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        }
    })
}

impl Store {
    /// Stores a PLAN job's artifact under `job_id`: the plan first, then the
    /// manifest (a manifest is only ever written for a complete plan).
    pub async fn upload(
        &self,
        job_id: &str,
        plan: &[u8],
        manifest: &PlanManifest,
    ) -> Result<String, ArtifactError> {
        check_job_id(job_id)?;
        verify_plan(plan, manifest, PLAN_FILE)?;
        let manifest_json =
            serde_json::to_vec_pretty(manifest).map_err(|e| ArtifactError::ManifestInvalid {
                location: MANIFEST_FILE.to_string(),
                problem: e.to_string(),
            })?;
        self.put(
            &format!("{job_id}/{PLAN_FILE}"),
            plan,
            "application/octet-stream",
        )
        .await?;
        self.put(
            &format!("{job_id}/{MANIFEST_FILE}"),
            &manifest_json,
            "application/json",
        )
        .await?;
        Ok(self.location(job_id))
    }

    /// Fetches the artifact of PLAN job `job_id` and verifies the plan against
    /// its manifest; plans over `max_plan_bytes` are refused.
    pub async fn download(
        &self,
        job_id: &str,
        max_plan_bytes: u64,
    ) -> Result<Artifact, ArtifactError> {
        check_job_id(job_id)?;
        let manifest_path = format!("{job_id}/{MANIFEST_FILE}");
        let raw = self.get(&manifest_path, MAX_MANIFEST_BYTES).await?;
        let location = self.location(&manifest_path);
        let manifest: PlanManifest =
            serde_json::from_slice(&raw).map_err(|e| ArtifactError::ManifestInvalid {
                location: location.clone(),
                problem: e.to_string(),
            })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ArtifactError::ManifestInvalid {
                location,
                problem: format!(
                    "format_version {} is not supported (this tendril reads {FORMAT_VERSION})",
                    manifest.format_version
                ),
            });
        }
        if manifest.job_id != job_id {
            return Err(ArtifactError::ManifestInvalid {
                location,
                problem: format!("it belongs to job {}, not {job_id}", manifest.job_id),
            });
        }
        if manifest.plan_size > max_plan_bytes {
            return Err(ArtifactError::TooLarge {
                location: self.location(&format!("{job_id}/{PLAN_FILE}")),
                limit: max_plan_bytes,
            });
        }
        let plan_path = format!("{job_id}/{PLAN_FILE}");
        // One byte more than announced is enough to detect a longer object.
        let plan = self
            .get(&plan_path, manifest.plan_size + 1)
            .await
            .map_err(|e| match e {
                ArtifactError::TooLarge { location, .. } => ArtifactError::DigestMismatch {
                    location,
                    expected: manifest.plan_sha256.clone(),
                    actual: "(larger than the manifest's plan_size)".to_string(),
                },
                other => other,
            })?;
        verify_plan(&plan, &manifest, &self.location(&plan_path))?;
        Ok(Artifact { manifest, plan })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_tells_truncated_from_corrupt() {
        let plan = b"PK\x03\x04 a plan".to_vec();
        let h = ConfigHash::of(&serde_json::json!({}));
        let m = PlanManifest::new("j1", h, &plan, "1.11.4", ChangeSummary::default());
        assert!(verify_plan(&plan, &m, "x").is_ok());
        let err = verify_plan(&plan[..4], &m, "x").unwrap_err();
        assert!(
            matches!(err, ArtifactError::Truncated { expected, actual: 4, .. } if expected == plan.len() as u64)
        );
        let mut bad = plan.clone();
        bad[5] ^= 1;
        assert!(matches!(
            verify_plan(&bad, &m, "x").unwrap_err(),
            ArtifactError::DigestMismatch { .. }
        ));
    }

    #[test]
    fn job_ids_must_be_plain_path_segments() {
        assert!(check_job_id("3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
