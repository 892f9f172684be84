//! Tearing down what a cluster created outside Terraform, before
//! `terraform destroy`: what would block the destroy or outlive it (cloud
//! load balancers, DNS records, disks).
//!
//! [`teardown`] runs these stages in order, all bounded by one timeout:
//!
//! 1. **Applications** in Argo CD's namespace: each gets Argo CD's
//!    [`RESOURCES_FINALIZER`](crate::appofapps::RESOURCES_FINALIZER), so that
//!    Argo CD deletes what it created before the Application goes; the root
//!    Application is deleted and waited for first (its applications go while
//!    the platform's load balancer and DNS controllers still run), then
//!    every other one. Skipped, with a note, when the cluster does not serve
//!    `argoproj.io/v1alpha1` Applications.
//! 2. **Services of type `LoadBalancer`**, 3. **Ingresses**, 4.
//!    **PersistentVolumeClaims** in [`Scope`]: deleted in this order, then
//!    waited for together with 5. the **PersistentVolumes** of those claims
//!    whose reclaim policy is `Delete` (their provisioner deletes them);
//!    `Retain` volumes are reported as retained by design.
//!
//! Every wait is for the object's uid to be gone (kube-runtime's
//! `await_condition` with `conditions::is_deleted`). What is still there
//! when the timeout passes is in the [`TeardownReport`] with why (deletion
//! requested or not, the finalizers that hold it, a volume's phase and
//! reclaim policy); that is not an error. An object already gone (`404`) is
//! fine, so a second run continues from what the first one left.
//! [`TeardownError`] is only for real failures: the API refusing a request
//! (other than `404`), or a request that does not answer.
//!
//! This module knows Argo CD's Application kind (from [`crate::appofapps`])
//! and nothing about jobs or Terraform.

mod applications;
mod objects;
mod report;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;
use serde::Serialize;
use tokio::time::Instant;

pub use report::{ObjectOutcome, Outcome, Remaining, Stage, StageReport, TeardownReport};

use crate::apply::ObjectRef;
use objects::{Kind, Pending};

/// The namespaces the Service, Ingress and PersistentVolumeClaim stages look in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every namespace (what a DESTROY job uses: the whole cluster goes).
    AllNamespaces,
    /// Only these namespaces (and the PersistentVolumes their claims name).
    Namespaces(Vec<String>),
}

impl Scope {
    fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::AllNamespaces => true,
            Scope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// How to tear down.
#[derive(Debug, Clone)]
pub struct TeardownOptions {
    /// The namespace Argo CD's Applications live in.
    pub argocd_namespace: String,
    /// The root Application, deleted (and waited for) before the others.
    pub root_application: String,
    /// Where Services, Ingresses and PersistentVolumeClaims are deleted.
    pub scope: Scope,
    /// The bound on the whole teardown: deleting and waiting.
    pub timeout: Duration,
    /// The field manager of the finalizer patch on Applications.
    pub field_manager: String,
}

impl TeardownOptions {
    /// The defaults: the App of Apps' root Application name
    /// ([`ROOT_APPLICATION`](crate::appofapps::ROOT_APPLICATION)), all
    /// namespaces, 10 minutes, field manager `tendril`.
    pub fn new(argocd_namespace: impl Into<String>) -> TeardownOptions {
        TeardownOptions {
            argocd_namespace: argocd_namespace.into(),
            root_application: crate::appofapps::ROOT_APPLICATION.to_string(),
            scope: Scope::AllNamespaces,
            timeout: Duration::from_secs(600),
            field_manager: crate::apply::DEFAULT_FIELD_MANAGER.to_string(),
        }
    }
}

/// Progress of a teardown, for the caller's sink.
#[derive(Debug, Clone)]
pub enum TeardownEvent {
    /// A stage starts.
    Stage(Stage),
    /// A stage does nothing, and why.
    Skipped {
        /// The stage.
        stage: Stage,
        /// Why.
        reason: String,
    },
    /// Argo CD's resources finalizer was added to this Application.
    FinalizerAdded(ObjectRef),
    /// A delete was sent.
    DeleteSent {
        /// The object.
        object: ObjectRef,
        /// Whether its deletion had begun before (an earlier run, a controller).
        already_deleting: bool,
    },
    /// Waiting for objects of a kind to be gone.
    Waiting {
        /// The kind.
        kind: String,
        /// How many.
        objects: usize,
    },
    /// An object is gone.
    Gone(ObjectRef),
    /// An object is still there when the wait ended.
    Remains {
        /// The object.
        object: ObjectRef,
        /// Why (see [`Remaining::reason`]).
        reason: String,
    },
}

/// A real failure of the teardown (what merely remains is in the report).
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// The API server refused a request (anything but `404`).
    #[error("cannot {action}: {}", api_text(.source))]
    Api {
        /// What was asked, on which object.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A request got no answer in time.
    #[error(
        "cannot {action}: the API server did not answer within {}s; check that the cluster is reachable and run the teardown again (it continues from what is left)",
        .after.as_secs()
    )]
    RequestTimeout {
        /// What was asked, on which object.
        action: String,
        /// How long it waited.
        after: Duration,
    },
    /// Watching an object until it is gone failed (e.g. no permission to watch).
    #[error(
        "cannot wait for {object} to be deleted: {source}; the teardown needs list and watch permission on it"
    )]
    Wait {
        /// The object.
        object: String,
        /// The watch error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// An Application kept changing between reading and patching it.
    #[error(
        "cannot add Argo CD's resources finalizer to {object}: it changed on every one of {attempts} attempts; run the teardown again"
    )]
    Contention {
        /// The Application.
        object: String,
        /// How often it was tried.
        attempts: usize,
    },
}

/// The server's message, with advice for a refused permission.
fn api_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let mut t = format!("{} ({}, HTTP {})", s.message, s.reason, s.code);
            if s.code == 401 || s.code == 403 {
                t.push_str(
                    "; the cluster credentials need permission to list, watch, patch and delete Applications, Services, Ingresses and PersistentVolumeClaims and to list and watch PersistentVolumes",
                );
            }
            t
        }
        other => other.to_string(),
    }
}

/// Tears down, in order, the Argo CD Applications, then Services of type
/// `LoadBalancer`, Ingresses and PersistentVolumeClaims in scope, and waits
/// (bounded by `opts.timeout`) until they and the claims' `Delete`
/// PersistentVolumes are gone. See the module documentation.
pub async fn teardown(
    client: &kube::Client,
    opts: &TeardownOptions,
    sink: &(dyn Fn(TeardownEvent) + Send + Sync),
) -> Result<TeardownReport, TeardownError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;

    sink(TeardownEvent::Stage(Stage::Applications));
    let mut stages = vec![applications::run(client, opts, deadline, sink).await?];

    // What is left: found first (volumes before their claims go), then
    // deleted in order, then waited for together.
    let services = Kind::of::<Service>(true);
    let ingresses = Kind::of::<Ingress>(true);
    let claims = Kind::of::<PersistentVolumeClaim>(true);
    let volumes = Kind::of::<PersistentVolume>(false);
    let load_balancers: Vec<DynamicObject> = objects::list(client, &services, &opts.scope)
        .await?
        .into_iter()
        .filter(|s| s.data.pointer("/spec/type").and_then(|t| t.as_str()) == Some("LoadBalancer"))
        .collect();
    let found_ingresses = objects::list(client, &ingresses, &opts.scope).await?;
    let found_claims = objects::list(client, &claims, &opts.scope).await?;
    let found_volumes = claimed_volumes(
        objects::list(client, &volumes, &Scope::AllNamespaces).await?,
        &found_claims,
        &opts.scope,
    );

    let mut sent = Vec::new();
    for (stage, kind, items) in [
        (Stage::LoadBalancerServices, &services, load_balancers),
        (Stage::Ingresses, &ingresses, found_ingresses),
        (Stage::PersistentVolumeClaims, &claims, found_claims),
    ] {
        sink(TeardownEvent::Stage(stage));
        sent.push(delete_stage(client, stage, kind, &items, sink).await?);
    }
    sink(TeardownEvent::Stage(Stage::PersistentVolumes));
    sent.push(volume_stage(&volumes, found_volumes));

    let waits = sent
        .into_iter()
        .map(|s| wait_stage(client, s, deadline, sink));
    stages.extend(futures::future::try_join_all(waits).await?);

    let report = TeardownReport {
        timed_out: Instant::now() >= deadline,
        stages,
        elapsed_millis: started.elapsed().as_millis() as u64,
    };
    Ok(report)
}

/// A stage whose deletes are sent: what it waits for and what is settled.
struct SentStage<'k> {
    stage: Stage,
    kind: &'k Kind,
    started: Instant,
    pending: Vec<Pending>,
    done: Vec<ObjectOutcome>,
}

/// Sends the delete of every object of one stage.
async fn delete_stage<'k>(
    client: &kube::Client,
    stage: Stage,
    kind: &'k Kind,
    items: &[DynamicObject],
    sink: &(dyn Fn(TeardownEvent) + Send + Sync),
) -> Result<SentStage<'k>, TeardownError> {
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut done = Vec::new();
    for obj in items {
        match objects::delete(client, kind, obj, sink).await? {
            Ok(p) => pending.push(p),
            Err(gone) => done.push(gone),
        }
    }
    Ok(SentStage {
        stage,
        kind,
        started,
        pending,
        done,
    })
}

/// Waits for a stage's objects until the deadline: its report.
async fn wait_stage(
    client: &kube::Client,
    sent: SentStage<'_>,
    deadline: Instant,
    sink: &(dyn Fn(TeardownEvent) + Send + Sync),
) -> Result<StageReport, TeardownError> {
    let mut objects = sent.done;
    objects.extend(objects::wait_all(client, sent.kind, sent.pending, deadline, sink).await?);
    Ok(StageReport {
        stage: sent.stage,
        skipped: None,
        objects,
        millis: sent.started.elapsed().as_millis() as u64,
    })
}

/// The PersistentVolumes of the claims in scope: those a claim names
/// (`spec.volumeName`) and those whose `spec.claimRef` points into the
/// scope (so a second run still finds the volume of a claim the first run
/// deleted).
fn claimed_volumes(
    volumes: Vec<DynamicObject>,
    claims: &[DynamicObject],
    scope: &Scope,
) -> Vec<DynamicObject> {
    let named: Vec<&str> = claims
        .iter()
        .filter_map(|c| c.data.pointer("/spec/volumeName").and_then(|v| v.as_str()))
        .collect();
    volumes
        .into_iter()
        .filter(|v| {
            let claimed_in_scope = v
                .data
                .pointer("/spec/claimRef/namespace")
                .and_then(|n| n.as_str())
                .is_some_and(|ns| scope.contains(ns));
            claimed_in_scope
                || v.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| named.contains(&n))
        })
        .collect()
}

/// The volumes' stage: those to wait for (reclaim policy `Delete`: their
/// provisioner deletes them) and those kept by design.
fn volume_stage(kind: &Kind, volumes: Vec<DynamicObject>) -> SentStage<'_> {
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut retained = Vec::new();
    for v in volumes {
        let remaining = objects::remaining(&v);
        // the API's default reclaim policy is Retain
        let policy = remaining
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| "Retain".to_string());
        let object = kind.object_ref(&v);
        if policy == "Delete" {
            pending.push(Pending {
                object,
                uid: v.metadata.uid.clone().unwrap_or_default(),
                when_gone: Outcome::Gone,
                note: None,
            });
        } else {
            retained.push(ObjectOutcome {
                object,
                outcome: Outcome::Retained {
                    reclaim_policy: policy,
                    phase: remaining.phase,
                },
                note: None,
            });
        }
    }
    SentStage {
        stage: Stage::PersistentVolumes,
        kind,
        started,
        pending,
        done: retained,
    }
}
