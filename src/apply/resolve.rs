//! Resolving a bundle: every manifest's kind to its API endpoint, namespaces
//! filled in or dropped, duplicates refused.
//!
//! A kind defined by a CustomResourceDefinition in the same bundle is
//! resolved from that CRD; every other kind through API discovery (one
//! request per group/version, cached by the [`Discovery`] cache, `429`
//! retried, "not served" never cached).

use super::request::{self, is_not_found};
use super::{ApplyError, Manifest, ObjectRef};
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// One object of a resolved bundle.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    /// The manifest, normalized (namespace filled or dropped, no managedFields).
    pub manifest: Manifest,
    /// Its identity.
    pub id: ObjectRef,
    /// Its endpoint.
    pub ar: ApiResource,
    /// For a CustomResourceDefinition: the (group, kind) it defines.
    pub defines: Option<(String, String)>,
}

/// kind -> (plural, namespaced) of one group/version.
type Kinds = Arc<HashMap<String, (String, bool)>>;

/// The discovery cache: group/version -> its kinds (only when served).
#[derive(Default)]
pub(crate) struct Discovery {
    cache: Mutex<HashMap<String, Kinds>>,
}

impl Discovery {
    /// Forgets one group/version (or all with `None`).
    pub fn forget(&self, api_version: Option<&str>) {
        if let Ok(mut cache) = self.cache.lock() {
            match api_version {
                Some(v) => {
                    cache.remove(v);
                }
                None => cache.clear(),
            }
        }
    }

    /// Forgets every version of an API group (a CRD of it was written).
    pub fn forget_group(&self, group: &str) {
        let prefix = format!("{group}/");
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    /// The kinds a group/version serves; `None` when it is not served.
    pub async fn kinds(
        &self,
        client: &Client,
        api_version: &str,
        deadline: Instant,
    ) -> Result<Option<Kinds>, ApplyError> {
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(api_version)
        {
            return Ok(Some(hit.clone()));
        }
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let discovery_error = |source| ApplyError::Discovery {
            api_version: api_version.to_string(),
            source,
        };
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| discovery_error(kube::Error::HttpError(e)))?;
        let list = match request::send::<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
        >(client, req, deadline)
        .await
        {
            Ok(a) => a.body,
            // Unknown groups answer `404 page not found` as text on a real server.
            Err(e) if is_not_found(&e) => {
                tracing::debug!(api_version, served = false, "discovered");
                return Ok(None);
            }
            Err(e) => {
                tracing::debug!(api_version, error = %e, "discovery failed");
                return Err(discovery_error(e));
            }
        };
        let kinds: Kinds = Arc::new(
            list.resources
                .into_iter()
                .filter(|r| !r.name.contains('/'))
                .map(|r| (r.kind, (r.name, r.namespaced)))
                .collect(),
        );
        tracing::debug!(
            api_version,
            kinds = kinds.len(),
            served = true,
            "discovered"
        );
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(api_version.to_string(), kinds.clone());
        }
        Ok(Some(kinds))
    }

    /// The endpoint of one kind, through discovery.
    pub async fn resource(
        &self,
        client: &Client,
        group: &str,
        version: &str,
        kind: &str,
        deadline: Instant,
    ) -> Result<Option<(ApiResource, bool)>, ApplyError> {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let Some(kinds) = self.kinds(client, &api_version, deadline).await? else {
            return Ok(None);
        };
        Ok(kinds.get(kind).map(|(plural, namespaced)| {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            (ApiResource::from_gvk_with_plural(&gvk, plural), *namespaced)
        }))
    }
}

/// What a CRD in the bundle defines.
struct CrdKinds {
    group: String,
    kind: String,
    plural: String,
    namespaced: bool,
    versions: Vec<String>,
}

fn crd_kinds(crd: &Value) -> Option<CrdKinds> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let kind = spec.pointer("/names/kind")?.as_str()?.to_string();
    let plural = spec.pointer("/names/plural")?.as_str()?.to_string();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let versions: Vec<String> = spec
        .get("versions")?
        .as_array()?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if versions.is_empty() {
        return None;
    }
    Some(CrdKinds {
        group,
        kind,
        plural,
        namespaced,
        versions,
    })
}

/// Resolves every manifest (see the module documentation). Nothing is
/// written; an unknown kind or a duplicate is an error before anything is applied.
pub(crate) async fn resolve(
    client: &Client,
    discovery: &Discovery,
    manifests: Vec<Manifest>,
    default_namespace: &str,
    deadline: Instant,
) -> Result<Vec<Object>, ApplyError> {
    let mut ids = Vec::with_capacity(manifests.len());
    for m in &manifests {
        ids.push(ObjectRef::from_manifest(m)?);
    }
    let mut bundle_kinds: HashMap<(String, String, String), (ApiResource, bool)> = HashMap::new();
    let mut defines: Vec<Option<(String, String)>> = vec![None; manifests.len()];
    for (i, m) in manifests.iter().enumerate() {
        if ids[i].group == "apiextensions.k8s.io" && ids[i].kind == "CustomResourceDefinition" {
            let crd = crd_kinds(&m.object).ok_or_else(|| ApplyError::InvalidManifest {
                origin: m.source.clone(),
                message: "CustomResourceDefinition lacks spec.group, spec.names.kind/plural or spec.versions".into(),
            })?;
            defines[i] = Some((crd.group.clone(), crd.kind.clone()));
            for v in &crd.versions {
                let gvk = GroupVersionKind::gvk(&crd.group, v, &crd.kind);
                bundle_kinds.insert(
                    (crd.group.clone(), v.clone(), crd.kind.clone()),
                    (
                        ApiResource::from_gvk_with_plural(&gvk, &crd.plural),
                        crd.namespaced,
                    ),
                );
            }
        }
    }
    let key = |id: &ObjectRef| (id.group.clone(), id.version.clone(), id.kind.clone());
    let mut wanted: Vec<String> = ids
        .iter()
        .filter(|id| !bundle_kinds.contains_key(&key(id)))
        .map(ObjectRef::api_version)
        .collect();
    wanted.sort();
    wanted.dedup();
    let found: HashMap<String, Option<Kinds>> = futures::stream::iter(wanted)
        .map(|gv| async move {
            discovery
                .kinds(client, &gv, deadline)
                .await
                .map(|r| (gv, r))
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;

    let mut objects = Vec::with_capacity(manifests.len());
    let mut seen: HashMap<(String, String, Option<String>, String), String> = HashMap::new();
    for ((mut manifest, mut id), defines) in manifests.into_iter().zip(ids).zip(defines) {
        let (ar, namespaced) = match bundle_kinds.get(&key(&id)) {
            Some(r) => r.clone(),
            None => {
                let api_version = id.api_version();
                let hit = found
                    .get(&api_version)
                    .and_then(Option::as_ref)
                    .and_then(|kinds| kinds.get(&id.kind).cloned());
                let Some((plural, namespaced)) = hit else {
                    return Err(ApplyError::UnknownKind {
                        origin: manifest.source.clone(),
                        kind: id.kind.clone(),
                        api_version,
                    });
                };
                let gvk = GroupVersionKind::gvk(&id.group, &id.version, &id.kind);
                (ApiResource::from_gvk_with_plural(&gvk, &plural), namespaced)
            }
        };
        normalize(&mut manifest, &mut id, namespaced, default_namespace);
        let identity = (
            id.group.clone(),
            id.kind.clone(),
            id.namespace.clone(),
            id.name.clone(),
        );
        if let Some(first) = seen.get(&identity) {
            return Err(ApplyError::Duplicate {
                object: id.to_string(),
                first: first.clone(),
                second: manifest.source.clone(),
            });
        }
        seen.insert(identity, manifest.source.clone());
        objects.push(Object {
            manifest,
            id,
            ar,
            defines,
        });
    }
    Ok(objects)
}

/// Fills the namespace of a namespaced object, drops it from a cluster-scoped
/// one, and drops `metadata.managedFields`.
fn normalize(manifest: &mut Manifest, id: &mut ObjectRef, namespaced: bool, default_ns: &str) {
    let Some(meta) = manifest
        .object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    meta.remove("managedFields");
    if namespaced {
        if id.namespace.is_none() {
            id.namespace = Some(default_ns.to_string());
            meta.insert("namespace".into(), Value::String(default_ns.to_string()));
        }
    } else if id.namespace.is_some() {
        id.namespace = None;
        meta.remove("namespace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_spec_gives_endpoint() {
        let crd = serde_json::json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true}, {"name": "v0", "served": false}]}});
        let k = crd_kinds(&crd).unwrap();
        assert_eq!(k.versions, vec!["v1"]);
        assert!(k.namespaced);
        assert_eq!(k.plural, "widgets");
    }

    #[test]
    fn namespace_filled_for_namespaced_and_dropped_for_cluster_scoped() {
        let mut m = Manifest::new(
            "t",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "managedFields": [{}]}}),
        );
        let mut id = ObjectRef::from_manifest(&m).unwrap();
        normalize(&mut m, &mut id, true, "dflt");
        assert_eq!(id.namespace.as_deref(), Some("dflt"));
        assert_eq!(m.object["metadata"]["namespace"], "dflt");
        assert!(m.object["metadata"].get("managedFields").is_none());
        let mut m = Manifest::new(
            "t",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "n", "namespace": "x"}}),
        );
        let mut id = ObjectRef::from_manifest(&m).unwrap();
        normalize(&mut m, &mut id, false, "dflt");
        assert_eq!(id.namespace, None);
        assert!(m.object["metadata"].get("namespace").is_none());
    }
}
