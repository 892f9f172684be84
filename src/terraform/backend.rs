//! The state backend as `terraform init` options.
//!
//! tendril does not rely on the configuration declaring a backend: `init`
//! writes `tendril_backend_override.tf` (an override file, which replaces any
//! backend block the configuration has) declaring an empty `s3` or `local`
//! backend, and passes the settings with `-backend-config`. Only non-secret
//! settings go there — a saved plan stores them — credentials reach terraform
//! only through its environment.

use std::ffi::OsString;
use std::path::PathBuf;

/// The file `init` writes into the working directory.
pub const OVERRIDE_FILE: &str = "tendril_backend_override.tf";

/// Where terraform keeps the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A local state file.
    Local {
        /// The state file (absolute).
        path: PathBuf,
    },
    /// An S3 or S3-compatible bucket.
    S3(S3Settings),
}

/// S3 backend settings (all non-secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The object key of the state.
    pub key: String,
    /// The bucket's region.
    pub region: String,
    /// A custom S3-compatible endpoint (`endpoints.s3`).
    pub endpoint: Option<String>,
    /// Path-style addressing (`bucket` in the path, not the host name).
    pub use_path_style: bool,
    /// Lock the state with a lock object next to it (`use_lockfile`, terraform ≥ 1.10).
    pub use_lockfile: bool,
    /// A profile in the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`
    /// in terraform's environment): how separate state-store keys reach the
    /// backend without being written into the plan.
    pub profile: Option<String>,
}

impl Backend {
    /// The backend type name in HCL.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Local { .. } => "local",
            Backend::S3(_) => "s3",
        }
    }

    /// The override file's content.
    pub fn override_hcl(&self) -> String {
        format!(
            "# Written by tendril: the backend is configured by `terraform init -backend-config`.\nterraform {{\n  backend \"{}\" {{}}\n}}\n",
            self.kind()
        )
    }

    /// The `-backend-config=...` arguments.
    ///
    /// For a custom endpoint (an S3-compatible store such as Supabase Storage,
    /// MinIO or moto) the AWS-only checks are skipped: credential validation
    /// through STS, the account-id lookup, the EC2 metadata API, the region
    /// name check, and the newer S3 checksums those stores do not support.
    pub fn init_args(&self) -> Vec<OsString> {
        let mut kv: Vec<(String, String)> = Vec::new();
        match self {
            Backend::Local { path } => {
                kv.push(("path".into(), path.display().to_string()));
            }
            Backend::S3(s) => {
                kv.push(("bucket".into(), s.bucket.clone()));
                kv.push(("key".into(), s.key.clone()));
                kv.push(("region".into(), s.region.clone()));
                if let Some(endpoint) = &s.endpoint {
                    kv.push((
                        "endpoints".into(),
                        format!("{{s3={}}}", hcl_string(endpoint)),
                    ));
                    for flag in [
                        "skip_credentials_validation",
                        "skip_requesting_account_id",
                        "skip_metadata_api_check",
                        "skip_region_validation",
                        "skip_s3_checksum",
                    ] {
                        kv.push((flag.into(), "true".into()));
                    }
                }
                if s.use_path_style {
                    kv.push(("use_path_style".into(), "true".into()));
                }
                if s.use_lockfile {
                    kv.push(("use_lockfile".into(), "true".into()));
                }
                if let Some(profile) = &s.profile {
                    kv.push(("profile".into(), profile.clone()));
                }
            }
        }
        kv.into_iter()
            .map(|(k, v)| OsString::from(format!("-backend-config={k}={v}")))
            .collect()
    }
}

/// A string literal in HCL syntax (JSON string escaping is valid HCL).
fn hcl_string(s: &str) -> String {
    serde_json::Value::String(s.replace("${", "$${").replace("%{", "%%{")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_compatible_stores_get_endpoint_and_skip_flags() {
        let b = Backend::S3(S3Settings {
            bucket: "vine-terraform-state".into(),
            key: "vy/p/s/r/terraform.tfstate".into(),
            region: "eu-west-1".into(),
            endpoint: Some("https://x.supabase.co/storage/v1/s3".into()),
            use_path_style: true,
            use_lockfile: true,
            profile: None,
        });
        let args: Vec<String> = b
            .init_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(args.contains(
            &"-backend-config=endpoints={s3=\"https://x.supabase.co/storage/v1/s3\"}".to_string()
        ));
        assert!(args.contains(&"-backend-config=skip_requesting_account_id=true".to_string()));
        assert!(args.contains(&"-backend-config=use_path_style=true".to_string()));
        assert!(args.contains(&"-backend-config=use_lockfile=true".to_string()));
        assert!(!args.iter().any(|a| a.contains("access_key")));
        assert!(b.override_hcl().contains("backend \"s3\" {}"));
    }

    #[test]
    fn plain_aws_gets_no_skip_flags() {
        let b = Backend::S3(S3Settings {
            bucket: "b".into(),
            key: "k".into(),
            region: "eu-west-1".into(),
            endpoint: None,
            use_path_style: false,
            use_lockfile: true,
            profile: None,
        });
        assert!(
            !b.init_args()
                .iter()
                .any(|a| a.to_string_lossy().contains("skip_"))
        );
    }
}
