//! The inventory: an ApplySet (KEP-3659) parent that records what one apply
//! set contains, for fast re-applies and for pruning.
//!
//! The parent is a Secret (what `kubectl apply --prune --applyset NAME`
//! uses by default) labelled `applyset.kubernetes.io/id` and annotated with
//! the tooling, the group-kinds of its members and any namespaces other than
//! its own. Every member carries the label `applyset.kubernetes.io/part-of`
//! with the set's id. The Secret's data key `members` records, per member,
//! its resourceVersion after the last apply, a digest of the manifest that
//! was applied, and a digest of the fields tendril's field manager owned.
//!
//! A re-apply lists the members' metadata only (`PartialObjectMetadataList`,
//! selected by the part-of label) and sends only objects whose manifest
//! changed, that are missing, or whose live resourceVersion moved with a
//! change to the fields tendril owns (someone else took a field over or
//! removed it). A status write moves the resourceVersion too but leaves the
//! ownership digest alone, so it sends nothing.

use super::ObjectRef;
use super::object::{ManagedEntry, ownership};
use super::request::{self, is_not_found};
use super::resolve::{Discovery, Object};
use base64::Engine;
use kube::Client;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, Request, Resource};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::time::Instant;

/// The label every member of an apply set carries (value: the set's id).
pub const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
/// The label on the parent naming the set's id.
pub const ID_LABEL: &str = "applyset.kubernetes.io/id";
/// The parent's annotation naming the tool that manages the set.
pub const TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// The parent's annotation listing the members' `Kind.group`s.
pub const GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
/// The parent's annotation listing member namespaces other than its own.
pub const NAMESPACES_ANNOTATION: &str = "applyset.kubernetes.io/additional-namespaces";
/// The Secret data key holding the member records.
const MEMBERS_KEY: &str = "members";

/// What can go wrong with an inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The name is not usable as a Secret name.
    #[error(
        "apply set name {name:?} is not a valid Secret name (lower-case letters, digits, '-' and '.', at most 253 characters)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// A Secret of that name exists but is not this set's parent.
    #[error(
        "Secret {namespace}/{name} exists but is not the parent of apply set {name} (label {ID_LABEL}={id} missing); choose another apply set name"
    )]
    NotAParent {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The id it should carry.
        id: String,
    },
    /// The member records cannot be read.
    #[error(
        "Secret {namespace}/{name}: the member records cannot be read ({message}); delete the key `members` to start the inventory afresh"
    )]
    Corrupt {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The namespace the parent lives in does not exist and the bundle does not create it.
    #[error(
        "namespace {namespace} of apply set {name} does not exist and the bundle has no Namespace {namespace}; create it or add it to the bundle"
    )]
    NoNamespace {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A request about the inventory failed.
    #[error("apply set {name}: cannot {what}: {}", request::error_text(.source))]
    Request {
        /// The set.
        name: String,
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// An apply set: the name and namespace of its parent Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySet {
    name: String,
    namespace: String,
}

impl ApplySet {
    /// The set whose parent is Secret `namespace/name`.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Result<Self, InventoryError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(InventoryError::BadName { name });
        }
        Ok(ApplySet {
            name,
            namespace: namespace.into(),
        })
    }

    /// The parent Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent Secret's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The set's id as KEP-3659 defines it:
    /// `applyset-<base64url(sha256(<name>.<namespace>.Secret.))>-v1`.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let text = format!("{}.{}.Secret.", self.name, self.namespace);
        let digest = sha2::Sha256::digest(text.as_bytes());
        format!(
            "applyset-{}-v1",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }

    fn request_error(&self, what: &str) -> impl FnOnce(kube::Error) -> InventoryError + '_ {
        let what = what.to_string();
        move |source| InventoryError::Request {
            name: self.name.clone(),
            what,
            source,
        }
    }
}

/// A member's identity: group, kind, namespace, name.
pub(crate) type Key = (String, String, Option<String>, String);

pub(crate) fn key_of(id: &ObjectRef) -> Key {
    (
        id.group.clone(),
        id.kind.clone(),
        id.namespace.clone(),
        id.name.clone(),
    )
}

/// What the parent records about one member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// resourceVersion after the last apply (or the last time it was seen unchanged).
    pub resource_version: String,
    /// Digest of the manifest last applied.
    pub manifest: String,
    /// Digest of the fields the field manager owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<String>,
}

impl Record {
    pub fn id(&self) -> ObjectRef {
        ObjectRef {
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The parent as found before applying.
#[derive(Debug, Default)]
pub(crate) struct Previous {
    pub exists: bool,
    pub records: HashMap<Key, Record>,
    pub group_kinds: BTreeSet<String>,
}

/// A member as listed (metadata only).
#[derive(Debug, Clone)]
pub(crate) struct LiveMember {
    pub id: ObjectRef,
    pub ar: ApiResource,
    pub resource_version: String,
    pub ownership: Option<String>,
    pub deleting: bool,
}

/// Reads the parent; an absent parent is an empty inventory.
pub(crate) async fn read(
    client: &Client,
    set: &ApplySet,
    deadline: Instant,
) -> Result<Previous, InventoryError> {
    let req = Request::new(format!("/api/v1/namespaces/{}/secrets", set.namespace))
        .get(&set.name, &Default::default())
        .map_err(|e| set.request_error("read its parent Secret")(kube::Error::BuildRequest(e)))?;
    let secret = match request::send::<Value>(client, req, deadline).await {
        Ok(a) => a.body,
        Err(e) if is_not_found(&e) => return Ok(Previous::default()),
        Err(e) => return Err(set.request_error("read its parent Secret")(e)),
    };
    let id = set.id();
    if secret
        .pointer(&format!("/metadata/labels/{}", ID_LABEL.replace('/', "~1")))
        .and_then(Value::as_str)
        != Some(id.as_str())
    {
        return Err(InventoryError::NotAParent {
            namespace: set.namespace.clone(),
            name: set.name.clone(),
            id,
        });
    }
    let corrupt = |message: String| InventoryError::Corrupt {
        namespace: set.namespace.clone(),
        name: set.name.clone(),
        message,
    };
    let annotation = |key: &str| -> BTreeSet<String> {
        secret
            .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let records: Vec<Record> = match secret
        .pointer(&format!("/data/{MEMBERS_KEY}"))
        .and_then(Value::as_str)
    {
        None => Vec::new(),
        Some(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| corrupt(e.to_string()))?;
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?
        }
    };
    Ok(Previous {
        exists: true,
        records: records.into_iter().map(|r| (key_of(&r.id()), r)).collect(),
        group_kinds: annotation(GROUP_KINDS_ANNOTATION),
    })
}

/// Fails when the parent's namespace does not exist and the bundle does not create it.
pub(crate) async fn check_namespace(
    client: &Client,
    set: &ApplySet,
    objects: &[Object],
    deadline: Instant,
) -> Result<(), InventoryError> {
    let created = objects
        .iter()
        .any(|o| o.id.group.is_empty() && o.id.kind == "Namespace" && o.id.name == set.namespace);
    if created {
        return Ok(());
    }
    let req = Request::new("/api/v1/namespaces")
        .get(&set.namespace, &Default::default())
        .map_err(|e| set.request_error("read its namespace")(kube::Error::BuildRequest(e)))?;
    match request::send::<serde::de::IgnoredAny>(client, req, deadline).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(InventoryError::NoNamespace {
            namespace: set.namespace.clone(),
            name: set.name.clone(),
        }),
        Err(e) => Err(set.request_error("read its namespace")(e)),
    }
}

/// Lists the live members (metadata only) of every kind and namespace the
/// previous records name, selected by the part-of label.
pub(crate) async fn list_members(
    client: &Client,
    discovery: &Discovery,
    set: &ApplySet,
    previous: &Previous,
    field_manager: &str,
    deadline: Instant,
) -> Result<HashMap<Key, LiveMember>, InventoryError> {
    // (group, version, kind) -> namespaces (None: cluster-scoped or all).
    let mut wanted: BTreeMap<(String, String, String), BTreeSet<Option<String>>> = BTreeMap::new();
    for r in previous.records.values() {
        wanted
            .entry((r.group.clone(), r.version.clone(), r.kind.clone()))
            .or_default()
            .insert(r.namespace.clone());
    }
    let selector = format!("{PART_OF_LABEL}={}", set.id());
    let mut lists = Vec::new();
    for ((group, version, kind), namespaces) in wanted {
        let resolved = discovery
            .resource(client, &group, &version, &kind, deadline)
            .await
            .map_err(|e| InventoryError::Request {
                name: set.name.clone(),
                what: format!("discover {kind}"),
                source: match e {
                    super::ApplyError::Discovery { source, .. } => source,
                    other => kube::Error::Service(other.to_string().into()),
                },
            })?;
        // A kind no longer served has no members left to list.
        let Some((ar, namespaced)) = resolved else {
            continue;
        };
        for ns in namespaces {
            lists.push((ar.clone(), if namespaced { ns } else { None }));
        }
    }
    let selector = &selector;
    let found: Vec<Vec<LiveMember>> =
        futures::future::try_join_all(lists.into_iter().map(|(ar, ns)| async move {
            let req = Request::new(DynamicObject::url_path(&ar, ns.as_deref()))
                .list_metadata(&ListParams::default().labels(selector))
                .map_err(|e| set.request_error("list its members")(kube::Error::BuildRequest(e)))?;
            let list: MetaList = request::send(client, req, deadline)
                .await
                .map_err(set.request_error(&format!("list its {}", ar.plural)))?
                .body;
            Ok::<_, InventoryError>(
                list.items
                    .into_iter()
                    .map(|m| LiveMember {
                        id: ObjectRef {
                            group: ar.group.clone(),
                            version: ar.version.clone(),
                            kind: ar.kind.clone(),
                            namespace: m.metadata.namespace.clone(),
                            name: m.metadata.name.clone(),
                        },
                        ar: ar.clone(),
                        resource_version: m.metadata.resource_version.unwrap_or_default(),
                        ownership: ownership(&m.metadata.managed_fields, field_manager),
                        deleting: m.metadata.deletion_timestamp.is_some(),
                    })
                    .collect(),
            )
        }))
        .await?;
    Ok(found
        .into_iter()
        .flatten()
        .map(|m| (key_of(&m.id), m))
        .collect())
}

#[derive(serde::Deserialize)]
struct MetaList {
    #[serde(default)]
    items: Vec<MetaItem>,
}

#[derive(serde::Deserialize)]
struct MetaItem {
    #[serde(default)]
    metadata: MetaOfItem,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MetaOfItem {
    name: String,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<String>,
    managed_fields: Vec<ManagedEntry>,
}

/// Labels a manifest as a member of the set.
pub(crate) fn label_member(object: &mut Value, id: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(PART_OF_LABEL.into(), Value::String(id.to_string()));
    }
}

/// A digest of a manifest as it is sent.
pub(crate) fn manifest_digest(object: &Value) -> String {
    use sha2::Digest;
    let text = serde_json::to_string(object).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
}

/// `Kind.group` (or `Kind` for the core group), as the parent lists them.
pub(crate) fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// Writes the parent with these records (server-side apply, forced: the
/// parent is tendril's alone).
pub(crate) async fn write(
    client: &Client,
    set: &ApplySet,
    records: &[Record],
    extra_group_kinds: &BTreeSet<String>,
    field_manager: &str,
    deadline: Instant,
) -> Result<(), InventoryError> {
    let mut group_kinds: BTreeSet<String> = records
        .iter()
        .map(|r| group_kind(&r.group, &r.kind))
        .collect();
    group_kinds.extend(extra_group_kinds.iter().cloned());
    let namespaces: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.namespace.as_deref())
        .filter(|ns| *ns != set.namespace)
        .collect();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| key_of(&r.id()));
    let members = serde_json::to_vec(&sorted).unwrap_or_default();
    let parent = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": set.name,
            "namespace": set.namespace,
            "labels": {ID_LABEL: set.id()},
            "annotations": {
                TOOLING_ANNOTATION: format!("tendril/v{}", env!("CARGO_PKG_VERSION")),
                GROUP_KINDS_ANNOTATION: group_kinds.into_iter().collect::<Vec<_>>().join(","),
                NAMESPACES_ANNOTATION: namespaces.into_iter().collect::<Vec<_>>().join(","),
            },
        },
        "type": "Opaque",
        "data": {MEMBERS_KEY: base64::engine::general_purpose::STANDARD.encode(members)},
    });
    let params = PatchParams {
        field_manager: Some(field_manager.to_string()),
        force: true,
        ..PatchParams::default()
    };
    let req = Request::new(format!("/api/v1/namespaces/{}/secrets", set.namespace))
        .patch(&set.name, &params, &Patch::Apply(&parent))
        .map_err(|e| set.request_error("write its parent Secret")(kube::Error::BuildRequest(e)))?;
    request::send::<serde::de::IgnoredAny>(client, req, deadline)
        .await
        .map_err(set.request_error("write its parent Secret"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_the_kep() {
        let set = ApplySet::new("tendril-argocd", "argocd").unwrap();
        let id = set.id();
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
        // base64url of 32 bytes without padding: 43 characters.
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
        assert_ne!(id, ApplySet::new("tendril-argocd", "other").unwrap().id());
        assert!(ApplySet::new("Bad_Name", "x").is_err());
        assert!(ApplySet::new("", "x").is_err());
    }

    #[test]
    fn members_are_labelled() {
        let mut o = json!({"metadata": {"name": "a"}});
        label_member(&mut o, "applyset-x-v1");
        assert_eq!(o["metadata"]["labels"][PART_OF_LABEL], "applyset-x-v1");
        assert_eq!(group_kind("apps", "Deployment"), "Deployment.apps");
        assert_eq!(group_kind("", "Secret"), "Secret");
    }
}
