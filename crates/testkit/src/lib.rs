//! Test support for tendril, never shipped in the `tendril` binary:
//!
//! - [`apiserver`]: a Kubernetes API server speaking real HTTP on loopback;
//! - [`moto`]: starts moto's server (S3, STS, EKS) on a free loopback port;
//! - [`postgres`]: starts a throwaway PostgreSQL cluster;
//! - [`tokens`]: local GCP and Azure token endpoints and a TLS bearer-checking peer;
//! - [`storage`]: a Supabase Storage object API on loopback;
//! - [`trellis`]: plays the Trellis worker API on loopback;
//! - [`e2e`]: picks the cluster a Kubernetes test runs against
//!   (`TENDRIL_E2E_KUBECONFIG` or the in-repo API server).

pub mod apiserver;
pub mod e2e;
pub mod moto;
pub mod postgres;
pub mod report_schema;
pub mod storage;
pub mod tokens;
pub mod trellis;
