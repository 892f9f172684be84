//! Field sets (`FieldsV1`) and the merge rules of server-side apply.
//!
//! A field set is a set of paths; each path is a list of `FieldsV1` path
//! elements (`f:spec`, `k:{"name":"app"}`, `v:"x"`). A path in the set means
//! the manager owns that leaf, atomic list, empty map, or list item.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::registry::{ListType, ResourceType};

/// One path of `FieldsV1` elements.
pub(crate) type Path = Vec<String>;
/// A set of owned paths.
pub(crate) type FieldSet = BTreeSet<Path>;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything but status (status too when the kind has no status subresource).
    Main { with_status: bool },
    /// Only `.status`.
    Status,
}

const IGNORED_META: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Whether `path` belongs to the given part of the object and is tracked.
fn in_part(path: &[String], part: Part) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match part {
        Part::Status => first == "f:status",
        Part::Main { with_status } => match first.as_str() {
            "f:apiVersion" | "f:kind" => false,
            "f:status" => with_status,
            "f:metadata" => path
                .get(1)
                .and_then(|p| p.strip_prefix("f:"))
                .is_none_or(|m| !IGNORED_META.contains(&m)),
            _ => true,
        },
    }
}

/// The set of paths present in `value` (an object) within `part`.
pub(crate) fn paths_of(value: &Value, rt: &ResourceType, part: Part) -> FieldSet {
    let mut out = FieldSet::new();
    let mut names = Vec::new();
    let mut path = Vec::new();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            names.push(k.as_str());
            path.push(format!("f:{k}"));
            collect(v, rt, &mut names, &mut path, &mut out);
            path.pop();
            names.pop();
        }
    }
    out.retain(|p| in_part(p, part));
    out
}

fn collect<'a>(
    v: &'a Value,
    rt: &ResourceType,
    names: &mut Vec<&'a str>,
    path: &mut Path,
    out: &mut FieldSet,
) {
    match v {
        Value::Null => {}
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                names.push(k.as_str());
                path.push(format!("f:{k}"));
                collect(child, rt, names, path, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match rt.list_type(names, items) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    path.push(item_key(item, &keys));
                    out.insert(path.clone());
                    if let Some(o) = item.as_object() {
                        for (k, child) in o {
                            names.push(k.as_str());
                            path.push(format!("f:{k}"));
                            collect(child, rt, names, path, out);
                            path.pop();
                            names.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// `k:{...}` for a list item: its key fields, sorted, compact JSON.
fn item_key(item: &Value, keys: &[&str]) -> String {
    let mut m = std::collections::BTreeMap::new();
    for k in keys {
        if let Some(v) = item.get(*k) {
            m.insert(*k, v);
        }
    }
    format!("k:{}", serde_json::to_string(&m).unwrap_or_default())
}

fn key_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// The value at `path`, if present.
pub(crate) fn get_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = value;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        cur.as_object()?.get(f)
    } else if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        cur.as_array()?.iter().find(|i| key_matches(i, &key))
    } else if let Some(v) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        cur.as_array()?.iter().find(|i| **i == want)
    } else {
        None
    }
}

fn step_mut<'a>(cur: &'a mut Value, el: &str) -> Option<&'a mut Value> {
    if let Some(f) = el.strip_prefix("f:") {
        cur.as_object_mut()?.get_mut(f)
    } else if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        cur.as_array_mut()?
            .iter_mut()
            .find(|i| key_matches(i, &key))
    } else {
        None
    }
}

/// Removes the field, list item or set element at `path`; then removes
/// parent maps left empty (below the top level) that nobody else owns.
pub(crate) fn remove_at(value: &mut Value, path: &[String], keep: &dyn Fn(&[String]) -> bool) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *value;
    for el in parent_path {
        match step_mut(cur, el) {
            Some(next) => cur = next,
            None => return,
        }
    }
    let removed = if let Some(f) = last.strip_prefix("f:") {
        cur.as_object_mut().and_then(|o| o.remove(f)).is_some()
    } else if let Some(k) = last.strip_prefix("k:") {
        match (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            (Ok(key), Some(a)) => {
                let before = a.len();
                a.retain(|i| !key_matches(i, &key));
                a.len() != before
            }
            _ => false,
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        match (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            (Ok(want), Some(a)) => {
                let before = a.len();
                a.retain(|i| *i != want);
                a.len() != before
            }
            _ => false,
        }
    } else {
        false
    };
    if !removed || parent_path.len() < 2 {
        return;
    }
    let empty = match get_at(value, parent_path) {
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if empty && !keep(parent_path) {
        remove_at(value, parent_path, keep);
    }
}

/// Deep-merges `applied` into `live` with the list rules of `rt`.
pub(crate) fn merge(live: &mut Value, applied: &Value, rt: &ResourceType) {
    let mut names = Vec::new();
    merge_at(live, applied, rt, &mut names);
}

fn merge_at<'a>(live: &mut Value, applied: &'a Value, rt: &ResourceType, names: &mut Vec<&'a str>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                if av.is_null() {
                    l.remove(k);
                    continue;
                }
                names.push(k.as_str());
                match l.get_mut(k) {
                    Some(lv) => merge_at(lv, av, rt, names),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => match rt.list_type(names, a) {
            ListType::Atomic => *l = a.clone(),
            ListType::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListType::Map(keys) => {
                for item in a {
                    let key_str = item_key(item, &keys);
                    let found = l.iter_mut().find(|li| item_key(li, &keys) == key_str);
                    match found {
                        Some(li) => merge_at(li, item, rt, names),
                        None => l.push(item.clone()),
                    }
                }
            }
        },
        (live, applied) => *live = applied.clone(),
    }
}

/// Decodes a `fieldsV1` object into a set of paths.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    decode(v, &mut path, &mut out);
    out
}

fn decode(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(o) = v.as_object() else {
        return;
    };
    for (k, child) in o {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        if child.as_object().is_none_or(Map::is_empty) {
            out.insert(path.clone());
        } else {
            decode(child, path, out);
        }
        path.pop();
    }
}

/// Encodes a set of paths as a `fieldsV1` object.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for el in p {
            let entry = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = entry else {
                break;
            };
            cur = m;
        }
    }
    // Mark members that also have children with ".".
    for p in set {
        if let Some(Value::Object(m)) = get_at_fields(&mut root, p)
            && !m.is_empty()
        {
            m.insert(".".into(), Value::Object(Map::new()));
        }
    }
    Value::Object(root)
}

fn get_at_fields<'a>(root: &'a mut Map<String, Value>, p: &[String]) -> Option<&'a mut Value> {
    let (first, rest) = p.split_first()?;
    let mut cur = root.get_mut(first)?;
    for el in rest {
        cur = cur.as_object_mut()?.get_mut(el)?;
    }
    Some(cur)
}

/// A path as the real server prints it in conflict messages:
/// `.spec.template.spec.containers[name="app"].image`.
pub(crate) fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push('[');
            s.push_str(&parts.join(","));
            s.push(']');
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Whether `prefix` is a prefix of `path` (or equal).
pub(crate) fn is_prefix(prefix: &[String], path: &[String]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}
