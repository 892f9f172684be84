//! The verbs every stage shares: list in scope, delete, wait until gone (by
//! uid, with kube-runtime's `await_condition`), and say why an object that
//! outlived the wait is still there.

use std::future::Future;
use std::time::Duration;

use futures::future::try_join_all;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use tokio::time::Instant;

use super::report::{ObjectOutcome, Outcome, Remaining};
use super::{Scope, TeardownError, TeardownEvent};
use crate::apply::ObjectRef;

/// How long one API request may take before the teardown gives up on it.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where progress goes.
pub(super) type Sink<'a> = &'a (dyn Fn(TeardownEvent) + Send + Sync);

/// One kind the teardown handles: its endpoint and whether it is namespaced.
#[derive(Debug, Clone)]
pub(super) struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Kind {
    /// A kind of k8s-openapi.
    pub fn of<K>(namespaced: bool) -> Kind
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
        }
    }

    /// The object's identity.
    pub fn object_ref(&self, obj: &DynamicObject) -> ObjectRef {
        ObjectRef {
            group: self.resource.group.clone(),
            version: self.resource.version.clone(),
            kind: self.resource.kind.clone(),
            namespace: if self.namespaced {
                obj.metadata.namespace.clone()
            } else {
                None
            },
            name: obj.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// The API for the object's namespace (or the cluster).
    pub fn api_for(&self, client: &kube::Client, id: &ObjectRef) -> Api<DynamicObject> {
        match &id.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// An object whose delete was sent (or, for a PersistentVolume, whose
/// provisioner is expected to delete it): what to wait for.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub object: ObjectRef,
    pub uid: String,
    /// `Outcome::Deleted` when this run sent the delete, `Outcome::Gone` otherwise.
    pub when_gone: Outcome,
    pub note: Option<String>,
}

/// Runs one API request, bounded by [`REQUEST_TIMEOUT`].
pub(super) async fn request<T>(
    action: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, TeardownError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => Ok(r),
        Err(_) => Err(TeardownError::RequestTimeout {
            action: action(),
            after: REQUEST_TIMEOUT,
        }),
    }
}

/// Whether the error is a `404` of any shape.
pub(super) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Every object of `kind` in `scope`.
pub(super) async fn list(
    client: &kube::Client,
    kind: &Kind,
    scope: &Scope,
) -> Result<Vec<DynamicObject>, TeardownError> {
    let apis: Vec<(String, Api<DynamicObject>)> = match (scope, kind.namespaced) {
        (Scope::Namespaces(namespaces), true) => namespaces
            .iter()
            .map(|ns| {
                (
                    format!("{} in namespace {ns}", kind.resource.plural),
                    Api::namespaced_with(client.clone(), ns, &kind.resource),
                )
            })
            .collect(),
        _ => vec![(
            kind.resource.plural.clone(),
            Api::all_with(client.clone(), &kind.resource),
        )],
    };
    let mut out = Vec::new();
    for (what, api) in apis {
        let action = || format!("list {what}");
        let items = request(action, api.list(&ListParams::default()))
            .await?
            .map_err(|source| TeardownError::Api {
                action: action(),
                source,
            })?;
        out.extend(items.items);
    }
    Ok(out)
}

/// Sends the delete (background propagation). `None` when the object was
/// already gone; otherwise what to wait for.
pub(super) async fn delete(
    client: &kube::Client,
    kind: &Kind,
    obj: &DynamicObject,
    sink: Sink<'_>,
) -> Result<Result<Pending, ObjectOutcome>, TeardownError> {
    let id = kind.object_ref(obj);
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let already_deleting = obj.metadata.deletion_timestamp.is_some();
    let api = kind.api_for(client, &id);
    let action = || format!("delete {id}");
    match request(action, api.delete(&id.name, &DeleteParams::background())).await? {
        Ok(_) => {
            sink(TeardownEvent::DeleteSent {
                object: id.clone(),
                already_deleting,
            });
            Ok(Ok(Pending {
                object: id,
                uid,
                when_gone: Outcome::Deleted,
                note: already_deleting
                    .then(|| "its deletion had begun before this run".to_string()),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(Err(ObjectOutcome {
            object: id,
            outcome: Outcome::Gone,
            note: None,
        })),
        Err(source) => Err(TeardownError::Api {
            action: action(),
            source,
        }),
    }
}

/// Waits until every pending object is gone or the deadline passes; then
/// says what became of each.
pub(super) async fn wait_all(
    client: &kube::Client,
    kind: &Kind,
    pending: Vec<Pending>,
    deadline: Instant,
    sink: Sink<'_>,
) -> Result<Vec<ObjectOutcome>, TeardownError> {
    if !pending.is_empty() {
        sink(TeardownEvent::Waiting {
            kind: kind.resource.kind.clone(),
            objects: pending.len(),
        });
    }
    try_join_all(
        pending
            .into_iter()
            .map(|p| wait_one(client, kind, p, deadline, sink)),
    )
    .await
}

async fn wait_one(
    client: &kube::Client,
    kind: &Kind,
    p: Pending,
    deadline: Instant,
    sink: Sink<'_>,
) -> Result<ObjectOutcome, TeardownError> {
    let api = kind.api_for(client, &p.object);
    let gone = await_condition(api.clone(), &p.object.name, conditions::is_deleted(&p.uid));
    let outcome = match tokio::time::timeout_at(deadline, gone).await {
        Ok(Ok(_)) => p.when_gone,
        Ok(Err(source)) => {
            return Err(TeardownError::Wait {
                object: p.object.to_string(),
                source,
            });
        }
        Err(_) => match describe(&api, &p.object, &p.uid).await? {
            Some(remaining) => Outcome::Remaining(remaining),
            None => p.when_gone,
        },
    };
    match &outcome {
        Outcome::Remaining(r) => sink(TeardownEvent::Remains {
            object: p.object.clone(),
            reason: r.reason(),
        }),
        _ => sink(TeardownEvent::Gone(p.object.clone())),
    }
    Ok(ObjectOutcome {
        object: p.object,
        outcome,
        note: p.note,
    })
}

/// The object's state now, `None` when that very object (by uid) is gone.
async fn describe(
    api: &Api<DynamicObject>,
    id: &ObjectRef,
    uid: &str,
) -> Result<Option<Remaining>, TeardownError> {
    let action = || format!("get {id}");
    match request(action, api.get(&id.name)).await? {
        Ok(obj) if obj.metadata.uid.as_deref() == Some(uid) => Ok(Some(remaining(&obj))),
        Ok(_) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(source) => Err(TeardownError::Api {
            action: action(),
            source,
        }),
    }
}

/// Why this object is still there, from its metadata and status.
pub(super) fn remaining(obj: &DynamicObject) -> Remaining {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    Remaining {
        deletion_requested: obj.metadata.deletion_timestamp.is_some(),
        finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
        phase: text(obj.data.pointer("/status/phase")),
        reclaim_policy: text(obj.data.pointer("/spec/persistentVolumeReclaimPolicy")),
    }
}
