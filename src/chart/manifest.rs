//! Rendered manifests: parsing, validation, install order, YAML output.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::ChartError;

/// One Kubernetes object a chart rendered, validated, its identity read and
/// its namespace filled. The apply engine takes `apply::Manifest` (object and
/// source only; `chart` and `apply` know nothing of each other): the rooms
/// that use both hand a rendered manifest over with its `source` and `object`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedManifest {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; filled with the release namespace for namespaced
    /// kinds that name none (also in [`RenderedManifest::object`]); `None` for
    /// cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The chart file it came from (`templates/x.yaml` or `crds/y.yaml`).
    pub source: String,
    /// The whole object. Shared: a chart that renders many value sets keeps
    /// the objects it parsed and hands the same one to every render whose
    /// document text was the same (`Arc::make_mut` gives a copy to change,
    /// `Arc::unwrap_or_clone` an owned object).
    pub object: Arc<Value>,
}

/// Kinds that are cluster-scoped in Kubernetes (no namespace is filled in).
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CSIDriver",
    "CSINode",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrustBundle",
    "ComponentStatus",
    "CustomResourceDefinition",
    "DeviceClass",
    "FlowSchema",
    "IPAddress",
    "IngressClass",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ResourceSlice",
    "RuntimeClass",
    "SelfSubjectAccessReview",
    "SelfSubjectReview",
    "SelfSubjectRulesReview",
    "ServiceCIDR",
    "StorageClass",
    "StorageVersionMigration",
    "SubjectAccessReview",
    "TokenReview",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
];

/// Whether `kind` is one of Kubernetes' built-in cluster-scoped kinds.
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.binary_search(&kind).is_ok()
}

/// Helm's install order of kinds; kinds not listed come after, sorted by name.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The position of `kind` in Helm's install order (unknown kinds get
/// `INSTALL_ORDER.len()`, i.e. after every known kind).
pub fn install_rank(kind: &str) -> usize {
    INSTALL_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(INSTALL_ORDER.len())
}

/// Sorts for installation: CRDs from `crds/` first, then by Helm's kind
/// order (unknown kinds last, by kind name); ties keep the render order
/// (template path, then position in the file).
pub(crate) fn sort_for_install(manifests: &mut [RenderedManifest]) {
    // The key of each manifest is computed once (a rank is a search of the
    // order list); the sort is stable, so ties keep the render order.
    manifests.sort_by_cached_key(|m| {
        let rank = install_rank(&m.kind);
        let unknown_kind = (rank == INSTALL_ORDER.len()).then(|| m.kind.clone());
        (!m.source.starts_with("crds/"), rank, unknown_kind)
    });
}

/// Parses rendered text into objects, dropping empty documents.
pub(crate) fn parse_documents(text: &str, file: &str) -> Result<Vec<Value>, ChartError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, super::yaml_read::rendered_options())
            .map_err(|e| ChartError::Manifest {
                file: file.to_string(),
                reason: format!("the rendered output is not valid YAML: {e}"),
            })?;
    docs.retain(|d| !d.is_null());
    docs.iter_mut()
        .for_each(super::yaml_read::whole_floats_to_integers);
    Ok(docs)
}

/// The documents of a rendered text, each with its `---` line: the text
/// cut before every line that starts a document (`---` alone, or followed by
/// a space). YAML allows such a line only as a document marker, and nothing
/// (anchors included) crosses documents, so each piece parses on its own to
/// the objects the whole text parses to.
pub(crate) fn split_documents(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut search_from = 0;
        let cut = loop {
            match rest[search_from..].find("\n---") {
                None => break rest.len(),
                Some(at) => {
                    let marker = search_from + at + 1;
                    let after = &rest.as_bytes()[marker + 3..];
                    if matches!(after.first(), None | Some(b'\n' | b'\r' | b' ' | b'\t')) {
                        break marker;
                    }
                    search_from = marker;
                }
            }
        };
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The documents later renders of one chart have parsed, by their text: a
/// document that renders to text seen before (most of a chart's documents,
/// from one value set to the next) is not parsed again. Parsing is a pure
/// function of the text, so a hit gives what parsing gives. At most
/// [`ParsedDocuments::MAX_TEXT_BYTES`] of text is kept; past it the cache
/// starts again empty.
///
/// A chart's first render keeps nothing: most charts are rendered once (one
/// `tendril render`, one DEPLOY), and for them keeping would only cost a copy
/// of every document's text. (It was measured when keeping also copied every
/// object, which sharing them has since made free.)
#[derive(Debug, Default)]
pub(crate) struct ParsedDocuments {
    cache: std::sync::Mutex<DocumentCache>,
    rendered_before: std::sync::atomic::AtomicBool,
}

/// The cache's contents: parsed objects by document text, the text's total
/// size, and whether this render adds to it.
#[derive(Debug, Default)]
pub(crate) struct DocumentCache {
    objects: std::collections::HashMap<String, Vec<Arc<Value>>>,
    text_bytes: usize,
    remember: bool,
}

impl ParsedDocuments {
    /// The most document text the cache keeps (the parsed objects take a few
    /// times as much memory).
    pub(crate) const MAX_TEXT_BYTES: usize = 8 << 20;

    /// Takes the cache for one render (a concurrent render finds it empty and
    /// parses everything; the last to finish puts its cache back).
    pub(crate) fn take(&self) -> DocumentCache {
        let remember = self
            .rendered_before
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        let mut cache = match self.cache.lock() {
            Ok(mut kept) => std::mem::take(&mut *kept),
            Err(_) => DocumentCache::default(),
        };
        cache.remember = remember;
        cache
    }

    /// Puts the cache back for the next render.
    pub(crate) fn keep(&self, cache: DocumentCache) {
        if let Ok(mut kept) = self.cache.lock() {
            *kept = cache;
        }
    }
}

impl DocumentCache {
    /// Remembers the objects of one document's text, within the size bound.
    fn insert(&mut self, text: &str, objects: Vec<Arc<Value>>) {
        if self.text_bytes + text.len() > ParsedDocuments::MAX_TEXT_BYTES {
            self.objects.clear();
            self.text_bytes = 0;
        }
        self.text_bytes += text.len();
        self.objects.insert(text.to_string(), objects);
    }
}

/// Parses rendered text like [`parse_documents`], document by document,
/// taking the objects of a document whose text is in `cache` from there and
/// adding the others to it.
pub(crate) fn parse_documents_cached(
    text: &str,
    file: &str,
    cache: &mut DocumentCache,
) -> Result<Vec<Arc<Value>>, ChartError> {
    let mut out = Vec::new();
    for piece in split_documents(text) {
        if let Some(objects) = cache.objects.get(piece) {
            out.extend(objects.iter().cloned());
            continue;
        }
        let objects: Vec<Arc<Value>> = match parse_documents(piece, file) {
            Ok(objects) => objects.into_iter().map(Arc::new).collect(),
            // the whole text's error names the right line
            Err(_) => {
                return Ok(parse_documents(text, file)?
                    .into_iter()
                    .map(Arc::new)
                    .collect());
            }
        };
        if cache.remember {
            out.extend(objects.iter().cloned());
            cache.insert(piece, objects);
        } else {
            out.extend(objects);
        }
    }
    Ok(out)
}

fn required_str<'a>(
    obj: &'a Value,
    pointer: &str,
    field: &str,
    file: &str,
) -> Result<&'a str, ChartError> {
    match obj.pointer(pointer) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ChartError::Manifest {
            file: file.to_string(),
            reason: format!(
                "an object has no `{field}`; every manifest needs apiVersion, kind and metadata.name"
            ),
        }),
        Some(other) => Err(ChartError::Manifest {
            file: file.to_string(),
            reason: format!(
                "`{field}` must be a string, found {}",
                super::values::kind_name(other)
            ),
        }),
    }
}

impl RenderedManifest {
    /// Validates an object and fills its namespace: apiVersion, kind and
    /// metadata.name are required; namespaced kinds without a namespace get
    /// `namespace`. `extra_cluster_kinds` lists more cluster-scoped kinds (from
    /// the chart's own CRDs).
    pub fn from_object(
        object: Value,
        source: &str,
        namespace: &str,
        extra_cluster_kinds: &HashSet<String>,
    ) -> Result<RenderedManifest, ChartError> {
        Self::from_shared(Arc::new(object), source, namespace, extra_cluster_kinds)
    }

    /// [`RenderedManifest::from_object`] of a shared object: it is copied
    /// only when its namespace must be filled in.
    pub(crate) fn from_shared(
        mut object: Arc<Value>,
        source: &str,
        namespace: &str,
        extra_cluster_kinds: &HashSet<String>,
    ) -> Result<RenderedManifest, ChartError> {
        if !object.is_object() {
            return Err(ChartError::Manifest {
                file: source.to_string(),
                reason: format!(
                    "a document is {}, not a Kubernetes object (a mapping)",
                    super::values::kind_name(&object)
                ),
            });
        }
        let api_version = required_str(&object, "/apiVersion", "apiVersion", source)?.to_string();
        let kind = required_str(&object, "/kind", "kind", source)?.to_string();
        let name = required_str(&object, "/metadata/name", "metadata.name", source)
            .map_err(|e| match e {
                ChartError::Manifest { file, reason } => ChartError::Manifest {
                    file,
                    reason: format!("{kind}: {reason}"),
                },
                other => other,
            })?
            .to_string();
        let cluster = is_cluster_scoped(&kind) || extra_cluster_kinds.contains(&kind);
        let ns = if cluster {
            None
        } else {
            match object.pointer("/metadata/namespace") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => {
                    if let Some(Value::Object(md)) = Arc::make_mut(&mut object).get_mut("metadata")
                    {
                        md.insert(
                            "namespace".to_string(),
                            Value::String(namespace.to_string()),
                        );
                    }
                    Some(namespace.to_string())
                }
            }
        };
        Ok(RenderedManifest {
            api_version,
            kind,
            name,
            namespace: ns,
            source: source.to_string(),
            object,
        })
    }
}

/// Serialises an object with `apiVersion`, `kind` and `metadata` first (the
/// conventional Kubernetes order), then the other keys sorted.
struct Ordered<'a>(&'a Value);

const LEADING_KEYS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for key in LEADING_KEYS {
            if let Some(v) = map.get(key) {
                out.serialize_entry(key, v)?;
            }
        }
        for (k, v) in map {
            if !LEADING_KEYS.contains(&k.as_str()) {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

/// Prints manifests as multi-document YAML: each document starts with `---`
/// and a `# Source:` comment naming its chart file. Top-level keys come as
/// `apiVersion`, `kind`, `metadata`, then the rest sorted; nested keys sorted.
///
/// A long list is printed on two threads, each taking the next manifest
/// still to print; the text is the same.
pub fn manifests_to_yaml(manifests: &[RenderedManifest]) -> String {
    if manifests.len() < 16 {
        return manifests.iter().map(print_document).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let printed: Vec<std::sync::OnceLock<String>> = manifests
        .iter()
        .map(|_| std::sync::OnceLock::new())
        .collect();
    let print_until_done = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (Some(m), Some(slot)) = (manifests.get(i), printed.get(i)) else {
                return;
            };
            let _ = slot.set(print_document(m));
        }
    };
    std::thread::scope(|s| {
        let helper = s.spawn(print_until_done);
        print_until_done();
        if let Err(panic) = helper.join() {
            std::panic::resume_unwind(panic);
        }
    });
    printed.into_iter().filter_map(|p| p.into_inner()).collect()
}

/// One manifest as a YAML document with its `---` and `# Source:` lines.
fn print_document(m: &RenderedManifest) -> String {
    let mut out = String::from("---\n# Source: ");
    out.push_str(&m.source);
    out.push('\n');
    match serde_saphyr::to_string(&Ordered(&m.object)) {
        Ok(text) => out.push_str(&text),
        // A serde_json::Value always serialises; keep the output whole anyway.
        Err(e) => out.push_str(&format!("# cannot print this object: {e}\n")),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_cut_before_their_markers_only() {
        let text = "a: 1\n---\nb: |\n  ---\n  x\n----\n--- \nc: 2\n---\n";
        let pieces: Vec<&str> = split_documents(text).collect();
        assert_eq!(
            pieces,
            [
                "a: 1\n",
                "---\nb: |\n  ---\n  x\n----\n",
                "--- \nc: 2\n",
                "---\n"
            ]
        );
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_documents("").count(), 0);
    }

    #[test]
    fn cached_documents_give_what_parsing_gives() {
        let text = "---\nkind: A\nv: &x 1\nw: *x\n---\n# only a comment\n---\nkind: B\n---\nkind: A\nv: &x 1\nw: *x\n";
        let whole: Vec<Arc<Value>> = parse_documents(text, "t")
            .expect("parses")
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut cache = DocumentCache {
            remember: true,
            ..Default::default()
        };
        let first = parse_documents_cached(text, "t", &mut cache).expect("parses");
        assert_eq!(first, whole);
        assert_eq!(cache.objects.len(), 3, "three distinct document texts");
        let kept = cache.text_bytes;
        let second = parse_documents_cached(text, "t", &mut cache).expect("parses");
        assert_eq!(second, whole);
        assert!(
            first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)),
            "a document seen before is shared, not copied"
        );
        assert_eq!(cache.text_bytes, kept, "nothing parsed the second time");

        let broken = "---\nkind: A\n---\nkey: [unclosed\n";
        let err = parse_documents_cached(broken, "t", &mut cache).expect_err("invalid YAML");
        assert_eq!(
            err.to_string(),
            parse_documents(broken, "t")
                .expect_err("invalid")
                .to_string(),
            "the error is the whole text's"
        );
    }

    #[test]
    fn a_first_render_keeps_nothing_later_ones_do() {
        let docs = ParsedDocuments::default();
        let mut first = docs.take();
        parse_documents_cached("kind: A\n", "t", &mut first).expect("parses");
        assert!(first.objects.is_empty(), "the first render keeps nothing");
        docs.keep(first);
        let mut second = docs.take();
        parse_documents_cached("kind: A\n", "t", &mut second).expect("parses");
        assert_eq!(
            second.objects.len(),
            1,
            "a second render keeps what it parsed"
        );
    }

    #[test]
    fn the_cache_starts_again_when_full() {
        let mut cache = DocumentCache {
            remember: true,
            ..Default::default()
        };
        let big = "x".repeat(ParsedDocuments::MAX_TEXT_BYTES / 2 + 1);
        cache.insert(&big, vec![Arc::new(Value::Null)]);
        cache.insert("kind: A\n", vec![Arc::new(Value::Null)]);
        assert_eq!(cache.objects.len(), 2);
        cache.insert(&format!("{big}y"), vec![Arc::new(Value::Null)]);
        assert_eq!(
            cache.objects.len(),
            1,
            "emptied before the text that did not fit"
        );
        assert!(cache.text_bytes <= ParsedDocuments::MAX_TEXT_BYTES);
    }

    #[test]
    fn cluster_scoped_list_is_sorted_for_binary_search() {
        let mut sorted = CLUSTER_SCOPED.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, CLUSTER_SCOPED);
    }
}
