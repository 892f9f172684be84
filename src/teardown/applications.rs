//! The Argo CD stage: every Application in Argo CD's namespace gets Argo
//! CD's resources finalizer (so that Argo CD deletes what it created), the
//! root Application is deleted and waited for first, then every other one.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use super::objects::{self, Kind, Pending, Sink, is_not_found, request};
use super::report::{ObjectOutcome, Outcome, Stage, StageReport};
use super::{TeardownError, TeardownEvent, TeardownOptions};
use crate::apply::ObjectRef;
use crate::appofapps::{RESOURCES_FINALIZER, application_resource};

/// How often a finalizer patch is retried when the Application changed
/// between reading and patching it.
const PATCH_ATTEMPTS: usize = 5;

/// Whether an Application will cascade: what [`ensure_finalizer`] found or did.
enum Cascade {
    /// It carries the finalizer (now or before).
    Yes,
    /// Its deletion began without the finalizer; none can be added any more.
    No,
    /// It is gone.
    Gone,
}

/// Runs the stage; skipped when the cluster does not serve Applications.
pub(super) async fn run(
    client: &kube::Client,
    opts: &TeardownOptions,
    deadline: Instant,
    sink: Sink<'_>,
) -> Result<StageReport, TeardownError> {
    let started = Instant::now();
    let kind = Kind {
        resource: application_resource(),
        namespaced: true,
    };
    let scope = super::Scope::Namespaces(vec![opts.argocd_namespace.clone()]);
    let apps = match objects::list(client, &kind, &scope).await {
        Ok(apps) => apps,
        Err(TeardownError::Api { source, .. }) if is_not_found(&source) => {
            let why = "the cluster does not serve argoproj.io/v1alpha1 Application: Argo CD is not installed".to_string();
            sink(TeardownEvent::Skipped {
                stage: Stage::Applications,
                reason: why.clone(),
            });
            return Ok(StageReport {
                stage: Stage::Applications,
                skipped: Some(why),
                objects: Vec::new(),
                millis: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let (root, rest): (Vec<_>, Vec<_>) = apps
        .into_iter()
        .partition(|a| a.metadata.name.as_deref() == Some(opts.root_application.as_str()));
    // The root first, waited for: what it cascades to (the vine's own
    // applications and their load balancers) goes while the platform
    // components (load balancer and DNS controllers) still run. While it
    // is there, the platform Applications are not deleted.
    let mut outcomes = delete_and_wait(client, &kind, &root, opts, deadline, sink).await?;
    let root_left = outcomes
        .iter()
        .any(|o| matches!(o.outcome, Outcome::Remaining(_)));
    if root_left {
        for app in &rest {
            let object = kind.object_ref(app);
            let remaining = objects::remaining(app);
            sink(TeardownEvent::Remains {
                object: object.clone(),
                reason: remaining.reason(),
            });
            outcomes.push(ObjectOutcome {
                object,
                outcome: Outcome::Remaining(remaining),
                note: Some(format!(
                    "not deleted: the root Application {} is still there, and what it cascades to goes first, while the platform's controllers still run",
                    opts.root_application
                )),
            });
        }
    } else {
        outcomes.extend(delete_and_wait(client, &kind, &rest, opts, deadline, sink).await?);
    }
    Ok(StageReport {
        stage: Stage::Applications,
        skipped: None,
        objects: outcomes,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Deletes these Applications (with cascade) and waits until they are gone.
async fn delete_and_wait(
    client: &kube::Client,
    kind: &Kind,
    apps: &[DynamicObject],
    opts: &TeardownOptions,
    deadline: Instant,
    sink: Sink<'_>,
) -> Result<Vec<ObjectOutcome>, TeardownError> {
    let mut outcomes = Vec::new();
    let mut pending = Vec::new();
    for app in apps {
        match delete_with_cascade(client, kind, app, opts, sink).await? {
            Ok(p) => pending.push(p),
            Err(done) => outcomes.push(done),
        }
    }
    outcomes.extend(objects::wait_all(client, kind, pending, deadline, sink).await?);
    Ok(outcomes)
}

/// Makes sure the Application cascades, then deletes it.
async fn delete_with_cascade(
    client: &kube::Client,
    kind: &Kind,
    app: &DynamicObject,
    opts: &TeardownOptions,
    sink: Sink<'_>,
) -> Result<Result<Pending, ObjectOutcome>, TeardownError> {
    let id = kind.object_ref(app);
    let api = kind.api_for(client, &id);
    let cascade = ensure_finalizer(&api, app, &id, opts, sink).await?;
    if let Cascade::Gone = cascade {
        return Ok(Err(ObjectOutcome {
            object: id,
            outcome: Outcome::Gone,
            note: None,
        }));
    }
    let mut sent = objects::delete(client, kind, app, sink).await?;
    if let (Cascade::No, Ok(p)) = (&cascade, &mut sent) {
        p.note = Some(format!(
            "its deletion began without Argo CD's {RESOURCES_FINALIZER} finalizer, which can no longer be added: Argo CD leaves the resources it created in place"
        ));
    }
    Ok(sent)
}

/// Whether a finalizer is Argo CD's resources finalizer (plain or with a
/// propagation suffix such as `/background`).
fn is_resources_finalizer(f: &str) -> bool {
    f == RESOURCES_FINALIZER
        || f.strip_prefix(RESOURCES_FINALIZER)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Adds Argo CD's resources finalizer when the Application lacks it: a JSON
/// merge patch of `metadata.finalizers` (the list read, plus this one) with
/// the resourceVersion read as its precondition. So no finalizer another
/// controller added meanwhile is lost (the server answers `409` and the
/// Application is read again), and the patch never creates an Application
/// that went away (a server-side apply would try to), nor leaves a field
/// manager's entry behind on it.
async fn ensure_finalizer(
    api: &Api<DynamicObject>,
    app: &DynamicObject,
    id: &ObjectRef,
    opts: &TeardownOptions,
    sink: Sink<'_>,
) -> Result<Cascade, TeardownError> {
    let name = &id.name;
    let what = || id.to_string();
    let mut current = app.clone();
    for _ in 0..PATCH_ATTEMPTS {
        let finalizers = current.metadata.finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| is_resources_finalizer(f)) {
            return Ok(Cascade::Yes);
        }
        if current.metadata.deletion_timestamp.is_some() {
            return Ok(Cascade::No);
        }
        let mut wanted = finalizers;
        wanted.push(RESOURCES_FINALIZER.to_string());
        // the resourceVersion read is a precondition: the server answers
        // 409 when the Application changed since
        let patch = json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "finalizers": wanted,
        }});
        let pp = PatchParams {
            field_manager: Some(opts.field_manager.clone()),
            ..PatchParams::default()
        };
        let action = || format!("add finalizer {RESOURCES_FINALIZER} to {}", what());
        match request(action, api.patch(name, &pp, &Patch::Merge(&patch))).await? {
            Ok(_) => {
                sink(TeardownEvent::FinalizerAdded(id.clone()));
                return Ok(Cascade::Yes);
            }
            Err(e) if is_not_found(&e) => return Ok(Cascade::Gone),
            // changed since it was read (409), or its deletion began and no
            // finalizer may be added (422): read it again
            Err(kube::Error::Api(s)) if matches!(s.code, 409 | 422) => {
                let get = || format!("get {}", what());
                match request(get, api.get(name)).await? {
                    Ok(fresh) => current = fresh,
                    Err(e) if is_not_found(&e) => return Ok(Cascade::Gone),
                    Err(source) => {
                        return Err(TeardownError::Api {
                            action: get(),
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(TeardownError::Api {
                    action: action(),
                    source,
                });
            }
        }
    }
    Err(TeardownError::Contention {
        object: what(),
        attempts: PATCH_ATTEMPTS,
    })
}
