//! Values: parsing, merging of user values, and coalescing with chart defaults,
//! following Helm's rules.
//!
//! Order of precedence (lowest first): the chart's `values.yaml`, each values
//! file in the order given, each `--set`/`--set-string` in the order given.
//!
//! - Values files are merged into each other: maps merge key by key, anything
//!   else (lists included) is replaced by the later file; a later `null` is
//!   kept as `null`.
//! - `--set` expressions are applied onto the merged user values (so
//!   `--set list[1]=x` changes one element of a list a values file gave).
//! - The user values are then coalesced with the chart defaults: maps merge,
//!   a user list replaces the default list, and a user `null` deletes a key
//!   the defaults have: a scalar is removed, a mapping or list is left empty.
//!   (Helm removes those too, and its Go templates read a removed key as
//!   empty; Tera refuses to read a missing field, so an empty mapping or
//!   list is what keeps the template's reading the same.)

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ChartError;

/// User-supplied values (values files and `--set`), before coalescing with a
/// chart's defaults. Always a mapping.
#[derive(Clone, PartialEq)]
pub struct Values(Value);

impl std::fmt::Debug for Values {
    // Values may carry secrets (`--set password=...`): never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.0.as_object().map(|m| m.len()).unwrap_or(0);
        write!(f, "Values({keys} top-level keys, contents redacted)")
    }
}

impl Default for Values {
    fn default() -> Self {
        Values::new()
    }
}

impl Values {
    /// No user values.
    pub fn new() -> Self {
        Values(Value::Object(Map::new()))
    }

    /// Values from a JSON value, which must be a mapping (`null` counts as empty).
    pub fn from_json(value: Value, origin: &str) -> Result<Self, ChartError> {
        match value {
            Value::Null => Ok(Values::new()),
            Value::Object(_) => Ok(Values(value)),
            other => Err(ChartError::ValuesNotMap {
                file: origin.to_string(),
                found: kind_name(&other),
            }),
        }
    }

    /// The values as JSON (a mapping).
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// Consumes the values, returning the JSON mapping.
    pub fn into_json(self) -> Value {
        self.0
    }

    /// Merges a values file's text (YAML) over the current values; `name`
    /// names the file in errors.
    pub fn merge_yaml(&mut self, text: &str, name: &str) -> Result<(), ChartError> {
        let parsed = parse_values(text, name)?;
        merge_into(&mut self.0, parsed);
        Ok(())
    }

    /// Reads and merges a values file (`-f FILE`).
    pub fn merge_file(&mut self, path: &std::path::Path) -> Result<(), ChartError> {
        let text = std::fs::read_to_string(path).map_err(|source| ChartError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.merge_yaml(&text, &path.display().to_string())
    }

    /// Merges another set of values over these.
    pub fn merge(&mut self, other: Values) {
        merge_into(&mut self.0, other.0);
    }

    /// Applies one `--set` (or, with `force_string`, `--set-string`)
    /// expression, which may hold several comma-separated assignments.
    pub fn set(&mut self, expr: &str, force_string: bool) -> Result<(), ChartError> {
        let Value::Object(map) = &mut self.0 else {
            // Unreachable by construction; keep the invariant anyway.
            self.0 = Value::Object(Map::new());
            return self.set(expr, force_string);
        };
        super::set::apply(expr, force_string, map)
    }
}

pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Parses YAML text into JSON; errors name `file`.
pub(crate) fn parse_yaml(text: &str, file: &str) -> Result<Value, ChartError> {
    serde_saphyr::from_str_with_options::<Value>(text, super::yaml_read::values_options()).map_err(
        |e| ChartError::Yaml {
            file: file.to_string(),
            message: crate::errors::for_people(&e.to_string()),
        },
    )
}

/// Parses a values document: a mapping, or empty (→ empty mapping).
pub(crate) fn parse_values(text: &str, file: &str) -> Result<Value, ChartError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match parse_yaml(text, file)? {
        Value::Null => Ok(Value::Object(Map::new())),
        mut v @ Value::Object(_) => {
            super::yaml_read::whole_floats_to_integers(&mut v);
            Ok(v)
        }
        other => Err(ChartError::ValuesNotMap {
            file: file.to_string(),
            found: kind_name(&other),
        }),
    }
}

/// Merges `src` into `dst` the way Helm merges values files: where both are
/// mappings, key by key (recursively); otherwise `src` replaces `dst`
/// (lists are replaced, not appended; `null` replaces too).
pub fn merge_into(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

/// Coalesces user values with a chart's defaults, like Helm: mappings merge
/// (user keys win), a user list or scalar replaces the default, and a user
/// `null` deletes a key the defaults define (a mapping or list stays, empty).
/// Keys only in the defaults are copied. Renders use the same rule in Tera's
/// value type (`coalesce_for_templates`; a unit test keeps the two equal).
pub fn coalesce(user: Value, defaults: &Value) -> Value {
    match (user, defaults) {
        (Value::Object(mut u), Value::Object(d)) => {
            for (k, dv) in d {
                match u.remove(k) {
                    Some(Value::Null) => {
                        if let Some(empty) = deleted(dv) {
                            u.insert(k.clone(), empty);
                        }
                    }
                    Some(uv @ Value::Object(_)) if dv.is_object() => {
                        u.insert(k.clone(), coalesce(uv, dv));
                    }
                    Some(uv) => {
                        u.insert(k.clone(), uv);
                    }
                    None => {
                        u.insert(k.clone(), dv.clone());
                    }
                }
            }
            Value::Object(u)
        }
        (u, _) => u,
    }
}

/// The dotted paths of the chart defaults `user` sets to `null` (which
/// removes them), in key order.
pub(crate) fn nulled_defaults(user: &Value, defaults: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_nulled(user, defaults, "", &mut out);
    out
}

fn collect_nulled(user: &Value, defaults: &Value, prefix: &str, out: &mut Vec<String>) {
    let (Value::Object(u), Value::Object(d)) = (user, defaults) else {
        return;
    };
    for (k, uv) in u {
        let Some(dv) = d.get(k) else { continue };
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if uv.is_null() {
            out.push(path);
        } else {
            collect_nulled(uv, dv, &path, out);
        }
    }
}

/// What a default becomes when the user sets it to `null`: nothing for a
/// scalar (the key is gone, as in Helm), an empty mapping or list for a
/// mapping or list, which templates read as Helm's templates read the
/// removed key: empty.
fn deleted(default: &Value) -> Option<Value> {
    emptied(default.is_object(), default.is_array())
}

/// An empty mapping or list, for a default that is one (see [`deleted`]).
fn emptied(mapping: bool, list: bool) -> Option<Value> {
    if mapping {
        Some(Value::Object(Map::new()))
    } else if list {
        Some(Value::Array(Vec::new()))
    } else {
        None
    }
}

/// [`coalesce`] into the value type templates read: the result shares every
/// subtree the user left alone with `defaults` (the chart's defaults,
/// converted once), so only what the user set is converted per render.
pub(crate) fn coalesce_for_templates(user: &Value, defaults: &tera::Value) -> tera::Value {
    let (Value::Object(u), Some(d)) = (user, defaults.as_map()) else {
        return tera::Value::from_serializable(user);
    };
    let mut merged: BTreeMap<String, tera::Value> = BTreeMap::new();
    for (key, dv) in d {
        let Some(key) = key.as_str() else { continue };
        match u.get(key) {
            Some(Value::Null) => {
                // As `deleted`, for a default in Tera's value type.
                if let Some(empty) = emptied(dv.is_map(), dv.is_array()) {
                    merged.insert(key.to_string(), tera::Value::from_serializable(&empty));
                }
            }
            Some(uv) => {
                merged.insert(key.to_string(), coalesce_for_templates(uv, dv));
            }
            None => {
                merged.insert(key.to_string(), dv.clone());
            }
        }
    }
    for (key, uv) in u {
        // A key not merged above is the user's own, or a default the user
        // deleted with `null` (kept out); a user's own `null` stays.
        let deleted = uv.is_null() && d.keys().any(|k| k.as_str() == Some(key));
        if !merged.contains_key(key) && !deleted {
            merged.insert(key.clone(), tera::Value::from_serializable(uv));
        }
    }
    tera::Value::from(merged)
}
