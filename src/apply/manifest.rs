//! Manifests: what gets applied, where it came from, and how to read them from YAML.

use super::ApplyError;
use serde_json::Value;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Annotation naming objects that must be ready before this one is applied.
///
/// Its value is a comma-separated list of references, each
/// `Kind[.group]/name` (a cluster-scoped object, or one in the annotated
/// object's own namespace) or `Kind[.group]/namespace/name`. Without `.group`
/// the reference matches that kind in any API group. Every reference must name
/// an object in the same bundle.
pub const DEPENDS_ON_ANNOTATION: &str = "tendril.dev/depends-on";

/// One Kubernetes object to apply and the place it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where the object came from, e.g. `manifests/app.yaml#2` or a template name.
    pub source: String,
    /// The object as JSON (`apiVersion`, `kind`, `metadata`, ...).
    pub object: Value,
}

impl Manifest {
    /// A manifest from an object and the place it came from.
    pub fn new(source: impl Into<String>, object: Value) -> Self {
        Manifest {
            source: source.into(),
            object,
        }
    }

    /// `apiVersion` of the object, empty when missing.
    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `kind` of the object, empty when missing.
    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.name`, empty when missing.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.namespace`, when set and not empty.
    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }
}

/// Identity of an object: group, version, kind, namespace and name.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct ObjectRef {
    /// API group, empty for the core group.
    pub group: String,
    /// API version (without the group).
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, `None` for cluster-scoped objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn from_manifest(m: &Manifest) -> Result<ObjectRef, ApplyError> {
        let invalid = |message: String| ApplyError::InvalidManifest {
            origin: m.source.clone(),
            message,
        };
        if !m.object.is_object() {
            return Err(invalid(
                "a document must be a mapping with apiVersion, kind and metadata".into(),
            ));
        }
        let api_version = m.api_version();
        let kind = m.kind();
        if api_version.is_empty() || kind.is_empty() {
            return Err(invalid(
                "the object has no apiVersion or no kind; add both".into(),
            ));
        }
        let name = m.name();
        if name.is_empty() {
            return Err(invalid(format!(
                "the {kind} has no metadata.name (generateName is not supported by server-side apply); give it a name"
            )));
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        Ok(ObjectRef {
            group,
            version,
            kind: kind.to_string(),
            namespace: m.namespace().map(str::to_string),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Reads manifests from files, directories (their `*.yaml`, `*.yml` and
/// `*.json` files, sorted by name, not recursive) and `-` (stdin).
///
/// Every file may hold several documents separated by `---`; empty documents
/// are skipped and `kind: List` documents are expanded into their items.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<Manifest>, ApplyError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ApplyError::Read {
                    path: "-".into(),
                    source,
                })?;
            out.extend(parse_manifests("<stdin>", &text)?);
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|source| read_err(path, source))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|source| read_err(path, source))? {
                let entry = entry.map_err(|source| read_err(path, source))?;
                let p = entry.path();
                let is_manifest = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if is_manifest && p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
            for f in files {
                out.extend(read_file(&f)?);
            }
        } else {
            out.extend(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_err(path: &Path, source: std::io::Error) -> ApplyError {
    ApplyError::Read {
        path: path.display().to_string(),
        source,
    }
}

fn read_file(path: &Path) -> Result<Vec<Manifest>, ApplyError> {
    let text = std::fs::read_to_string(path).map_err(|source| read_err(path, source))?;
    parse_manifests(&path.display().to_string(), &text)
}

/// Parses multi-document YAML (or JSON) text; `origin` names it in sources and errors.
///
/// Each manifest's source is `origin#N`, N counting documents from 1.
pub fn parse_manifests(origin: &str, text: &str) -> Result<Vec<Manifest>, ApplyError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 20_000_000,
            max_nodes: 10_000_000,
            max_documents: 100_000,
        },
    };
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| ApplyError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let source = format!("{origin}#{}", i + 1);
        match doc {
            Value::Null => {}
            Value::Object(ref map)
                if map.get("kind").and_then(Value::as_str) == Some("List")
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                if let Value::Object(mut map) = doc
                    && let Some(Value::Array(items)) = map.remove("items")
                {
                    for (j, item) in items.into_iter().enumerate() {
                        out.push(Manifest::new(format!("{source}.items[{j}]"), item));
                    }
                }
            }
            Value::Object(_) => out.push(Manifest::new(source, doc)),
            _ => {
                return Err(ApplyError::InvalidManifest {
                    origin: source,
                    message: "a document must be a mapping with apiVersion, kind and metadata"
                        .into(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_empty_docs_and_lists() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n";
        let ms = parse_manifests("f.yaml", text).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].kind(), "ConfigMap");
        assert_eq!(ms[0].source, "f.yaml#1");
        assert_eq!(ms[1].kind(), "Secret");
        assert!(ms[1].source.ends_with(".items[0]"), "{}", ms[1].source);
    }

    #[test]
    fn scalar_document_is_rejected_with_its_place() {
        let err = parse_manifests(
            "x.yaml",
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\njust text\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("x.yaml#2:"), "{err}");
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let err = parse_manifests("bad.yaml", "a: [1, 2\n").unwrap_err();
        assert!(matches!(err, ApplyError::Parse { .. }));
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }

    #[test]
    fn object_ref_requires_name_and_kind() {
        let m = Manifest::new(
            "s",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}}),
        );
        let err = ObjectRef::from_manifest(&m).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let m = Manifest::new(
            "s",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}}),
        );
        let r = ObjectRef::from_manifest(&m).unwrap();
        assert_eq!((r.group.as_str(), r.version.as_str()), ("apps", "v1"));
        assert_eq!(r.to_string(), "Deployment/n/d");
    }
}
