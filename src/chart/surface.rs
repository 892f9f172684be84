//! The values surface of a chart: which keys a user may set, and what to say
//! about the others.
//!
//! A chart declares its surface in `surface.yaml` at its root:
//!
//! ```yaml
//! # Mappings whose keys are the user's own (ConfigMap entries, labels, ...),
//! # even where values.yaml gives defaults. `*` stands for any one key.
//! open:
//!   - configs.cm
//!   - "*.podLabels"
//! # Keys the chart deliberately does not implement, and why. A key listed
//! # here covers every key below it.
//! unsupported:
//!   server.ingressGrpc: the gRPC Ingress is not ported
//! ```
//!
//! A key of the user's values is *supported* when `values.yaml` has it, or
//! when it lies below a mapping that is open: declared in `open`, or a
//! mapping whose default is empty (`{}`), or any key whose default is not a
//! mapping (a list, a scalar, `null`: the user's value replaces it whole).
//! Any other key gives a [`ValueWarning`]: [`ValueWarning::Unsupported`] when
//! `unsupported` lists it (or a key above it), else [`ValueWarning::Unknown`].
//! A chart without `surface.yaml` declares nothing and is never checked, as
//! Helm does not check values either.

use serde_json::Value;

use super::ChartError;

/// A dotted path of value keys, e.g. `configs.cm."exec.enabled"`; a key that
/// holds a dot, a quote or a space, or is empty, is written in double quotes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    /// The path of these keys, outermost first.
    pub fn new(keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        KeyPath(keys.into_iter().map(Into::into).collect())
    }

    /// The keys, outermost first.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// Parses the dotted form (as [`std::fmt::Display`] writes it).
    fn parse(text: &str) -> Result<KeyPath, String> {
        let mut keys = Vec::new();
        let mut rest = text;
        loop {
            let key;
            if let Some(quoted) = rest.strip_prefix('"') {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("{text:?}: a quoted key is not closed"))?;
                key = &quoted[..end];
                rest = &quoted[end + 1..];
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                key = &rest[..end];
                rest = &rest[end..];
                if key.is_empty() {
                    return Err(format!(
                        "{text:?}: an empty key (two dots, or a dot at an end)"
                    ));
                }
            }
            keys.push(key.to_string());
            if rest.is_empty() {
                return Ok(KeyPath(keys));
            }
            rest = rest
                .strip_prefix('.')
                .ok_or_else(|| format!("{text:?}: a quoted key must be followed by a dot"))?;
        }
    }

    /// Whether `pattern` (whose `*` keys match any key) is a prefix of this
    /// path, or the path itself.
    fn starts_with(&self, pattern: &KeyPath) -> bool {
        pattern.0.len() <= self.0.len()
            && pattern
                .0
                .iter()
                .zip(&self.0)
                .all(|(p, k)| p == "*" || p == k)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if key.is_empty() || key.contains(['.', '"', ' ']) {
                write!(f, "\"{key}\"")?;
            } else {
                f.write_str(key)?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for KeyPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A value the user set that the chart does not act on: nothing it renders
/// depends on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ValueWarning {
    /// The chart knows the key and does not implement it.
    Unsupported {
        /// The key the user set.
        path: KeyPath,
        /// Why the chart does not implement it (from `surface.yaml`).
        reason: String,
    },
    /// Neither the chart's defaults nor its list of unsupported keys has it:
    /// most likely a misspelling.
    Unknown {
        /// The key the user set.
        path: KeyPath,
    },
}

impl ValueWarning {
    /// The key the user set.
    pub fn path(&self) -> &KeyPath {
        match self {
            ValueWarning::Unsupported { path, .. } | ValueWarning::Unknown { path } => path,
        }
    }
}

impl std::fmt::Display for ValueWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueWarning::Unsupported { path, reason } => write!(
                f,
                "value `{path}` is not supported by this chart and has no effect: {reason}"
            ),
            ValueWarning::Unknown { path } => write!(
                f,
                "value `{path}` is not a key of this chart and has no effect; check its \
                 spelling against the chart's values.yaml"
            ),
        }
    }
}

/// The warnings of one set of values, in key order; empty when every key is
/// supported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ValueWarnings(Vec<ValueWarning>);

impl ValueWarnings {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The warnings.
    pub fn iter(&self) -> std::slice::Iter<'_, ValueWarning> {
        self.0.iter()
    }

    /// `Ok(self)` when not `strict` or there is no warning; else the error
    /// [`ChartError::UnsupportedValues`] listing them.
    pub fn enforce(self, strict: bool) -> Result<ValueWarnings, ChartError> {
        if strict && !self.is_empty() {
            return Err(ChartError::UnsupportedValues(self));
        }
        Ok(self)
    }
}

impl std::fmt::Display for ValueWarnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, w) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{w}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ValueWarnings {
    type Item = &'a ValueWarning;
    type IntoIter = std::slice::Iter<'a, ValueWarning>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A chart's declared surface (`surface.yaml`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Surface {
    open: Vec<KeyPath>,
    unsupported: Vec<(KeyPath, String)>,
}

/// `surface.yaml` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SurfaceFile {
    #[serde(default)]
    open: Vec<String>,
    #[serde(default)]
    unsupported: std::collections::BTreeMap<String, String>,
}

impl Surface {
    /// Parses `surface.yaml`; `file` names it in errors.
    pub(crate) fn parse(text: &str, file: &str) -> Result<Surface, ChartError> {
        let parsed: SurfaceFile =
            serde_saphyr::from_str_with_options(text, super::yaml_read::values_options()).map_err(
                |e| ChartError::Yaml {
                    file: file.to_string(),
                    message: e.to_string(),
                },
            )?;
        let bad_key = |message: String| ChartError::Yaml {
            file: file.to_string(),
            message,
        };
        let open = parsed
            .open
            .iter()
            .map(|p| KeyPath::parse(p).map_err(bad_key))
            .collect::<Result<_, _>>()?;
        let unsupported = parsed
            .unsupported
            .into_iter()
            .map(|(p, reason)| Ok((KeyPath::parse(&p).map_err(bad_key)?, reason)))
            .collect::<Result<_, ChartError>>()?;
        Ok(Surface { open, unsupported })
    }

    /// The warnings for `user` values against the chart's `defaults`.
    pub(crate) fn check(&self, user: &Value, defaults: &Value) -> ValueWarnings {
        let mut out = Vec::new();
        let mut path = Vec::new();
        if let (Value::Object(user), Value::Object(defaults)) = (user, defaults) {
            self.walk(user, defaults, &mut path, &mut out);
        }
        ValueWarnings(out)
    }

    fn walk(
        &self,
        user: &serde_json::Map<String, Value>,
        defaults: &serde_json::Map<String, Value>,
        path: &mut Vec<String>,
        out: &mut Vec<ValueWarning>,
    ) {
        let mut keys: Vec<&String> = user.keys().collect();
        keys.sort();
        for key in keys {
            path.push(key.clone());
            match (defaults.get(key), &user[key]) {
                (Some(Value::Object(d)), Value::Object(u)) if !d.is_empty() => {
                    if !self.is_open(path) {
                        self.walk(u, d, path, out);
                    }
                }
                (Some(_), _) => {}
                (None, _) => out.push(self.warning(KeyPath(path.clone()))),
            }
            path.pop();
        }
    }

    fn is_open(&self, path: &[String]) -> bool {
        let here = KeyPath(path.to_vec());
        self.open
            .iter()
            .any(|p| p.0.len() == here.0.len() && here.starts_with(p))
    }

    fn warning(&self, path: KeyPath) -> ValueWarning {
        match self.unsupported.iter().find(|(p, _)| path.starts_with(p)) {
            Some((_, reason)) => ValueWarning::Unsupported {
                path,
                reason: reason.clone(),
            },
            None => ValueWarning::Unknown { path },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn surface() -> Surface {
        Surface::parse(
            "open: [configs.cm, \"*.labels\"]\nunsupported:\n  server.grpc: not ported\n",
            "surface.yaml",
        )
        .expect("surface")
    }

    fn defaults() -> Value {
        json!({
            "configs": {"cm": {"url": ""}, "ssh": {"knownHosts": "x"}},
            "server": {"replicas": 1, "labels": {"a": "b"}, "resources": {}},
        })
    }

    #[test]
    fn supported_open_and_replaced_keys_give_nothing() {
        let user = json!({
            "configs": {"cm": {"exec.enabled": "true"}, "ssh": {"knownHosts": ["y"]}},
            "server": {"replicas": 2, "labels": {"c": "d"}, "resources": {"limits": {}}},
        });
        assert!(surface().check(&user, &defaults()).is_empty());
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        let user = json!({
            "server": {"grpc": {"enabled": true}, "replica": 2},
            "configs": {"ssh": {"extra.hosts": "h"}},
        });
        let warnings: Vec<String> = surface()
            .check(&user, &defaults())
            .iter()
            .map(|w| w.path().to_string())
            .collect();
        assert_eq!(
            warnings,
            [
                "configs.ssh.\"extra.hosts\"",
                "server.grpc",
                "server.replica"
            ]
        );
        let first = surface().check(&user, &defaults());
        assert!(matches!(
            first.iter().nth(1),
            Some(ValueWarning::Unsupported { reason, .. }) if reason == "not ported"
        ));
        assert!(matches!(
            first.iter().nth(2),
            Some(ValueWarning::Unknown { .. })
        ));
        assert!(matches!(
            first.enforce(true),
            Err(ChartError::UnsupportedValues(w)) if w.len() == 3
        ));
    }

    #[test]
    fn key_paths_round_trip() {
        for text in ["a.b", "configs.cm.\"exec.enabled\"", "\"\".x"] {
            assert_eq!(KeyPath::parse(text).expect("parses").to_string(), text);
        }
        assert!(KeyPath::parse("a..b").is_err());
        assert!(KeyPath::parse("a.\"b").is_err());
    }
}
