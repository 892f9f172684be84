//! tendril runs DEPLOY jobs for Vintner-style infrastructure platforms.
//!
//! It applies a reviewed Terraform plan, builds cluster credentials without any
//! cloud CLI, installs Argo CD from an embedded chart rendered with Tera, applies
//! it with Kubernetes server-side apply, waits for it to be ready, wires an App of
//! Apps from the infrastructure facts, and reports every phase with its timing.
//!
//! The binary `tendril` is a thin layer over this library: every command is a
//! function here that takes typed input and a progress sink.
//!
//! Module map (lower modules never import higher ones; see `docs/design.md`):
//!
//! | module | owns |
//! | --- | --- |
//! | [`job`] | job spec types, parsing, validation |
//! | [`pipeline`] | the phase sequence, phase timing, the report |
//! | [`cloud`] | the one `Provider` enum; per provider: credentials, sessions, token sources, output names |
//! | [`artifact`] | plan artifacts and their digests |
//! | [`confighash`] | canonical config hashing, the stale-plan check |
//! | [`errors`] | printing an error with its causes |
//! | [`terraform`] | running the terraform binary |
//! | [`facts`] | typed infrastructure facts from Terraform outputs |
//! | [`kubeconfig`] | kube clients and kubeconfig files from facts |
//! | [`logging`] | what the library logs about its own I/O (API requests) |
//! | [`outfile`] | writing output files safely (atomic, links, FIFOs, modes) |
//! | [`chart`] | chart archives, values, Tera rendering, manifests |
//! | [`apply`] | staged server-side apply, readiness, waiting |
//! | [`argocd`] | the Argo CD install |
//! | [`appofapps`] | the App of Apps |
//! | [`queue`] | where jobs come from and results go |
//! | [`teardown`] | deleting what the cluster created outside Terraform, before a destroy |
//! | [`worker`] | the claim loop |
#![warn(missing_docs)]

pub mod secret;

pub mod apply;
pub mod appofapps;
pub mod argocd;
pub mod artifact;
pub mod chart;
pub mod cloud;
pub mod confighash;
pub mod errors;
pub mod facts;
pub mod job;
pub mod kubeconfig;
pub mod logging;
pub mod outfile;
pub mod pipeline;
pub mod queue;
pub mod teardown;
pub mod terraform;
pub mod worker;

pub use secret::Secret;
