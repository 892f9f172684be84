//! Deleting objects: one object and waiting until it is gone (to recreate
//! it), and pruning the members an inventory no longer lists.

use super::ObjectRef;
use super::request::{self, is_not_found};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PropagationPolicy};
use kube::core::{ApiResource, Request, Resource};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use tokio::time::Instant;

/// Deletes an object (background propagation) and waits until that very
/// object (by uid) is gone, or the deadline passes (then the error is a timeout).
pub(crate) async fn delete_and_wait(
    client: &Client,
    ar: &ApiResource,
    id: &ObjectRef,
    deadline: Instant,
) -> Result<(), kube::Error> {
    let Some(uid) = delete(client, ar, id, deadline).await? else {
        return Ok(());
    };
    wait_deleted(client, ar, id, &uid, deadline).await
}

/// Sends the delete; the uid of the object being deleted, `None` when it was
/// already gone.
pub(crate) async fn delete(
    client: &Client,
    ar: &ApiResource,
    id: &ObjectRef,
    deadline: Instant,
) -> Result<Option<String>, kube::Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let req = Request::new(DynamicObject::url_path(ar, id.namespace.as_deref()))
        .delete(&id.name, &dp)
        .map_err(kube::Error::BuildRequest)?;
    match request::send::<Value>(client, req, deadline).await {
        // The object while it is being deleted, or a Status once it is gone.
        Ok(a) => Ok(a
            .body
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                a.body
                    .pointer("/details/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until the object with this uid no longer exists.
pub(crate) async fn wait_deleted(
    client: &Client,
    ar: &ApiResource,
    id: &ObjectRef,
    uid: &str,
    deadline: Instant,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = match id.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    let gone = await_condition(api, &id.name, conditions::is_deleted(uid));
    match tokio::time::timeout_at(deadline, gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(kube::Error::Service(Box::new(e))),
        Err(_) => Err(kube::Error::Service(
            format!("{id} was still present when the timeout passed").into(),
        )),
    }
}
