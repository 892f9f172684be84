//! Server-side apply of a manifest bundle in stages; an ApplySet inventory;
//! pruning; readiness rules; waiting.
//!
//! The entry point is [`ResourceManager::apply`]. The engine is split by verb:
//!
//! - `resolve`: every manifest's kind to its endpoint (from a
//!   CustomResourceDefinition in the same bundle, or through cached discovery);
//! - [`plan`]: what each object waits for (a custom resource its CRD, a
//!   namespaced object its Namespace, `tendril.dev/depends-on` targets);
//! - `object`: one server-side apply (`application/apply-patch+yaml`) and
//!   what its answer says (created / configured / unchanged, or an [`ObjectError`]);
//! - `staged`: every object sent as soon as what it waits for is there;
//! - `wait`: watching objects until the rules in [`readiness`] say ready;
//! - `delete`: deleting and waiting until gone (recreate, prune);
//! - `inventory`: the [`ApplySet`] parent (KEP-3659) that makes re-applies
//!   send only what changed and pruning possible.
//!
//! Input is a list of [`Manifest`]s: a JSON object plus the place it came from
//! ([`read_manifests`] reads them from YAML files, directories or stdin).
//! Progress goes to a caller-supplied sink as [`ApplyEvent`]s; nothing here prints.
//!
//! This module depends on nothing else in tendril.

mod delete;
mod diagnose;
pub mod inventory;
mod manager;
mod manifest;
mod object;
pub mod plan;
pub mod readiness;
mod report;
mod request;
mod resolve;
mod staged;
mod wait;

pub use inventory::{ApplySet, InventoryError};
pub use manager::{ApplyOptions, DEFAULT_FIELD_MANAGER, ResourceManager};
pub use manifest::{DEPENDS_ON_ANNOTATION, Manifest, ObjectRef, parse_manifests, read_manifests};
pub use object::ObjectError;
pub use readiness::{Readiness, ReadinessOptions, ReadinessRule};
pub use report::{Action, ApplyEvent, ApplyReport, FieldConflict, ObjectResult, Status};

/// Where progress events go.
pub(crate) type Sink<'a> = &'a (dyn Fn(ApplyEvent) + Send + Sync);

/// Everything that can go wrong while reading, planning, applying or waiting.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A manifest file, directory or stdin could not be read.
    #[error(
        "cannot read manifests from {path}: {source}; check that the path exists and is readable"
    )]
    Read {
        /// The path (or `-` for stdin).
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{origin}: not valid YAML: {message}")]
    Parse {
        /// File (and document) the text came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A document is YAML but not a Kubernetes object we can apply.
    #[error("{origin}: {message}")]
    InvalidManifest {
        /// File (and document) the object came from.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The same object appears twice in the bundle.
    #[error("{object} appears twice: in {first} and in {second}; remove one of them")]
    Duplicate {
        /// The object.
        object: String,
        /// Where it appears first.
        first: String,
        /// Where it appears again.
        second: String,
    },
    /// The cluster does not serve a kind and no CRD in the bundle defines it.
    #[error(
        "{origin}: the cluster does not serve kind {kind} in {api_version}, and no CustomResourceDefinition in this bundle defines it; install the CRD first or fix apiVersion/kind"
    )]
    UnknownKind {
        /// File (and document) of the object.
        origin: String,
        /// The object's kind.
        kind: String,
        /// The object's apiVersion.
        api_version: String,
    },
    /// API discovery failed for a reason other than "not served".
    #[error(
        "API discovery of {api_version} failed: {source}; check the cluster address and credentials"
    )]
    Discovery {
        /// The group/version being discovered.
        api_version: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A `tendril.dev/depends-on` annotation is malformed or names an object not in the bundle.
    #[error("{origin}: {object}: {message}")]
    Dependency {
        /// File (and document) of the object.
        origin: String,
        /// The object carrying the annotation.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// The inventory could not be read or written.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Dependencies form a cycle.
    #[error("dependency cycle: {cycle}; break it by removing a tendril.dev/depends-on annotation")]
    Cycle {
        /// The objects in the cycle, `a -> b -> a`.
        cycle: String,
    },
    /// One or more objects failed to apply or became failed while waiting.
    #[error("{}", report::failure_text(.report))]
    Failed {
        /// What happened to every object.
        report: Box<ApplyReport>,
    },
    /// The timeout passed before every object was ready.
    #[error("{}", report::timeout_text(.report, .timeout))]
    Timeout {
        /// The timeout that passed.
        timeout: std::time::Duration,
        /// What happened to every object (those not ready say why).
        report: Box<ApplyReport>,
    },
}

impl ApplyError {
    /// The per-object report, when the error happened after applying began.
    pub fn report(&self) -> Option<&ApplyReport> {
        match self {
            ApplyError::Failed { report } | ApplyError::Timeout { report, .. } => Some(report),
            _ => None,
        }
    }
}
