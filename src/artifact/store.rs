//! The three artifact stores behind one type, and the local-directory store.

use super::{ArtifactError, S3Credentials, S3Store, SupabaseStore, write_atomic};
use crate::job::ArtifactStoreConfig;
use std::io::Read;
use std::path::PathBuf;

/// Where plan artifacts live.
#[derive(Debug, Clone)]
pub enum Store {
    /// A local directory.
    Local(LocalStore),
    /// Supabase Storage's object API.
    Supabase(SupabaseStore),
    /// An S3-compatible bucket.
    S3(S3Store),
}

impl Store {
    /// The store a job file's `tendril.artifacts` describes. An S3 store needs
    /// `s3_credentials` (the cloud identity's, or the environment's).
    pub fn from_config(
        cfg: &ArtifactStoreConfig,
        s3_credentials: Option<S3Credentials>,
    ) -> Result<Store, ArtifactError> {
        match cfg {
            ArtifactStoreConfig::Local { dir } => Ok(Store::Local(LocalStore::new(dir.clone()))),
            ArtifactStoreConfig::Supabase {
                url,
                bucket,
                service_key,
            } => {
                let key = service_key
                    .as_ref()
                    .ok_or_else(|| ArtifactError::Config {
                        field: "tendril.artifacts.service_key".into(),
                        problem: "is missing; give the Supabase service key, e.g. {env: SUPABASE_SERVICE_ROLE_KEY}".into(),
                    })?
                    .resolve("tendril.artifacts.service_key")
                    .map_err(|e| ArtifactError::Config {
                        field: "tendril.artifacts.service_key".into(),
                        problem: e.to_string(),
                    })?;
                Ok(Store::Supabase(SupabaseStore::new(url, bucket, key)?))
            }
            ArtifactStoreConfig::S3 {
                bucket,
                region,
                endpoint,
                prefix,
            } => {
                let creds = s3_credentials.ok_or_else(|| ArtifactError::Config {
                    field: "tendril.artifacts".into(),
                    problem: "is an S3 store but no AWS credentials are available; run with a cloud identity or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                })?;
                Ok(Store::S3(S3Store::new(
                    bucket,
                    region.as_deref().unwrap_or("us-east-1"),
                    endpoint.as_deref(),
                    prefix.as_deref().unwrap_or(""),
                    creds,
                )?))
            }
        }
    }

    /// Writes one object.
    pub async fn put(
        &self,
        path: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), ArtifactError> {
        match self {
            Store::Local(s) => s.put(path, bytes),
            Store::Supabase(s) => s.put(path, bytes, content_type).await,
            Store::S3(s) => s.put_object(path, bytes, content_type).await,
        }
    }

    /// Reads one object, refusing more than `limit` bytes.
    pub async fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, ArtifactError> {
        match self {
            Store::Local(s) => s.get(path, limit),
            Store::Supabase(s) => s.get(path, limit).await,
            Store::S3(s) => s.get_object(path, limit).await,
        }
    }

    /// A human-readable location of an object (or of a job's artifact).
    pub fn location(&self, path: &str) -> String {
        match self {
            Store::Local(s) => s.root.join(path).display().to_string(),
            Store::Supabase(s) => s.location(path),
            Store::S3(s) => s.location(path),
        }
    }
}

/// A directory holding `{job}/plan.tfplan` and `{job}/manifest.json`; writes are atomic.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore { root }
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
        write_atomic(&self.root.join(path), bytes)
    }

    fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, ArtifactError> {
        let full = self.root.join(path);
        let file = match std::fs::File::open(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArtifactError::NotFound {
                    location: full.display().to_string(),
                });
            }
            Err(source) => {
                return Err(ArtifactError::Io {
                    action: "open",
                    path: full,
                    source,
                });
            }
        };
        let mut buf = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| ArtifactError::Io {
                action: "read",
                path: full.clone(),
                source,
            })?;
        if buf.len() as u64 > limit {
            return Err(ArtifactError::TooLarge {
                location: full.display().to_string(),
                limit,
            });
        }
        Ok(buf)
    }
}
