//! Field sets (`FieldsV1`) and the merge rules of server-side apply.
//!
//! A field set is a set of paths; each path is a list of `FieldsV1` path
//! elements (`f:spec`, `k:{"name":"app"}`, `v:"x"`). A path in the set means
//! the manager owns that leaf, atomic list, empty map, or list item.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::registry::{ListType, ResourceType};

/// One path of `FieldsV1` elements.
pub(crate) type Path = Vec<String>;

/// A set of owned fields, shaped like `FieldsV1`: a node is a member when
/// the manager owns that leaf, atomic list, empty map or list item.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Owns nothing.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn child_mut(&mut self, el: &str) -> &mut FieldSet {
        self.children.entry(el.to_owned()).or_default()
    }

    /// Whether exactly `path` is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut cur = self;
        for el in path {
            cur = cur.children.get(el)?;
        }
        Some(cur)
    }

    /// Adds every member of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.child_mut(k).union(c);
        }
    }

    /// Removes every member of `other`; prunes emptied nodes. Returns
    /// whether anything was removed.
    pub fn subtract(&mut self, other: &FieldSet) -> bool {
        let mut changed = false;
        if other.member && self.member {
            self.member = false;
            changed = true;
        }
        for (k, oc) in &other.children {
            if let Some(c) = self.children.get_mut(k) {
                changed |= c.subtract(oc);
                if c.is_empty() {
                    self.children.remove(k);
                }
            }
        }
        changed
    }

    /// Removes one member path.
    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((first, rest)) => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Adds `key: value` to the `k:{...}` keys of the list items at `list`
    /// that lack it (a defaulted key field).
    pub fn default_item_key(&mut self, list: &[&str], key: &str, value: &Value) {
        let mut cur = self;
        for el in list {
            match cur.children.get_mut(*el) {
                Some(c) => cur = c,
                None => return,
            }
        }
        let old = std::mem::take(&mut cur.children);
        for (k, c) in old {
            let rekeyed = k
                .strip_prefix("k:")
                .and_then(|j| serde_json::from_str::<BTreeMap<String, Value>>(j).ok())
                .map(|mut m| {
                    m.entry(key.to_owned()).or_insert_with(|| value.clone());
                    format!("k:{}", serde_json::to_string(&m).unwrap_or_default())
                })
                .unwrap_or(k);
            cur.children.insert(rekeyed, c);
        }
    }

    /// Keeps only members whose value exists in `value`. Returns whether
    /// anything was removed.
    pub fn retain_present(&mut self, value: &Value) -> bool {
        let mut changed = false;
        self.children.retain(|k, c| match step(value, k) {
            Some(v) => {
                changed |= c.retain_present(v);
                !c.is_empty()
            }
            None => {
                changed = true;
                false
            }
        });
        changed
    }
}

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

/// The fields present in `value` (an object) within `part`.
pub(crate) fn paths_of(value: &Value, rt: &ResourceType, part: Part) -> FieldSet {
    let mut out = FieldSet::default();
    let Some(obj) = value.as_object() else {
        return out;
    };
    let mut names = Vec::new();
    for (k, v) in obj {
        let wanted = match (part, k.as_str()) {
            (Part::Status, "status") => true,
            (Part::Status, _) => false,
            (_, "apiVersion" | "kind") => false,
            (Part::Main { with_status }, "status") => with_status,
            _ => true,
        };
        if !wanted {
            continue;
        }
        names.push(k.as_str());
        if k == "metadata" && part != Part::Status {
            if let Some(meta) = v.as_object() {
                let node = out.child_mut("f:metadata");
                for (mk, mv) in meta {
                    if IGNORED_META.contains(&mk.as_str()) {
                        continue;
                    }
                    names.push(mk.as_str());
                    let key = format!("f:{mk}");
                    collect(mv, rt, &mut names, node.child_mut(&key));
                    if node.children.get(&key).is_some_and(FieldSet::is_empty) {
                        node.children.remove(&key);
                    }
                    names.pop();
                }
            }
        } else {
            let key = format!("f:{k}");
            collect(v, rt, &mut names, out.child_mut(&key));
        }
        let key = format!("f:{k}");
        if out.children.get(&key).is_some_and(FieldSet::is_empty) {
            out.children.remove(&key);
        }
        names.pop();
    }
    out
}

/// Fills `node` (the node for `v`) with the members found in `v`.
fn collect<'a>(v: &'a Value, rt: &ResourceType, names: &mut Vec<&'a str>, node: &mut FieldSet) {
    match v {
        Value::Null => {}
        // Label selectors (and a Service's selector map) are atomic.
        Value::Object(_) if atomic_map(rt, names) => node.member = true,
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                if child.is_null() {
                    continue;
                }
                names.push(k.as_str());
                collect(child, rt, names, node.child_mut(&format!("f:{k}")));
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match rt.list_type(names, items) {
            ListType::Atomic => node.member = true,
            ListType::Set => {
                for item in items {
                    node.child_mut(&format!("v:{item}")).member = true;
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    let item_node = node.child_mut(&item_key(item, &keys));
                    item_node.member = true;
                    if let Some(o) = item.as_object() {
                        for (k, child) in o {
                            if child.is_null() {
                                continue;
                            }
                            names.push(k.as_str());
                            collect(child, rt, names, item_node.child_mut(&format!("f:{k}")));
                            names.pop();
                        }
                    }
                }
            }
        },
        _ => node.member = true,
    }
}

fn atomic_map(rt: &ResourceType, names: &[&str]) -> bool {
    !rt.custom
        && names.len() == 2
        && names == ["spec", "selector"]
        && matches!(
            rt.plural.as_str(),
            "services" | "deployments" | "replicasets" | "statefulsets" | "daemonsets" | "jobs"
        )
}

fn is_item(el: &str) -> bool {
    el.starts_with("k:") || el.starts_with("v:")
}

/// Members of `mine` also owned by `theirs` whose value in `config` differs
/// from the live one: the fields an apply of `config` would take away.
pub(crate) fn conflicts(
    mine: &FieldSet,
    theirs: &FieldSet,
    config: Option<&Value>,
    live: Option<&Value>,
) -> Vec<Path> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    conflicts_at(mine, theirs, config, live, &mut path, &mut out);
    out
}

fn conflicts_at(
    mine: &FieldSet,
    theirs: &FieldSet,
    config: Option<&Value>,
    live: Option<&Value>,
    path: &mut Path,
    out: &mut Vec<Path>,
) {
    if mine.member && theirs.member && path.last().is_some_and(|l| !is_item(l)) && config != live {
        out.push(path.clone());
    }
    for (k, mc) in &mine.children {
        let Some(tc) = theirs.children.get(k) else {
            continue;
        };
        path.push(k.clone());
        let c = config.and_then(|v| step(v, k));
        let l = live.and_then(|v| step(v, k));
        conflicts_at(mc, tc, c, l, path, out);
        path.pop();
    }
}

/// Members of `old` that are neither in `new` (nor below) nor owned by
/// `others` (nor below): what an apply that no longer sets them removes.
pub(crate) fn removals(old: &FieldSet, new: &FieldSet, others: &FieldSet) -> Vec<Path> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    removals_at(old, Some(new), Some(others), &mut path, &mut out);
    out
}

fn removals_at(
    old: &FieldSet,
    new: Option<&FieldSet>,
    others: Option<&FieldSet>,
    path: &mut Path,
    out: &mut Vec<Path>,
) {
    for (k, oc) in &old.children {
        let nc = new.and_then(|n| n.children.get(k));
        let tc = others.and_then(|n| n.children.get(k));
        path.push(k.clone());
        if oc.member && nc.is_none() && tc.is_none() {
            out.push(path.clone());
        } else {
            removals_at(oc, nc, tc, path, out);
        }
        path.pop();
    }
}

/// Members of `set` (the fields of `new`) whose value differs from `old`
/// (list items: that are new).
pub(crate) fn changed(set: &FieldSet, old: Option<&Value>, new: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::default();
    changed_at(set, old, new, "", &mut out);
    out
}

fn changed_at(
    set: &FieldSet,
    old: Option<&Value>,
    new: Option<&Value>,
    el: &str,
    out: &mut FieldSet,
) {
    if set.member {
        let differs = if is_item(el) {
            old.is_none()
        } else {
            old != new
        };
        out.member = differs;
    }
    for (k, c) in &set.children {
        let mut child = FieldSet::default();
        changed_at(
            c,
            old.and_then(|v| step(v, k)),
            new.and_then(|v| step(v, k)),
            k,
            &mut child,
        );
        if !child.is_empty() {
            out.children.insert(k.clone(), child);
        }
    }
}

/// Marks as owned (`"."`) the maps of `new` that `changed` reaches and that
/// did not exist in `old`: an update that creates a map owns the map itself.
pub(crate) fn mark_created_maps(changed: &mut FieldSet, old: Option<&Value>, new: &Value) {
    for (k, c) in changed.children.iter_mut() {
        if !k.starts_with("f:") {
            continue;
        }
        let n = step(new, k);
        let o = old.and_then(|v| step(v, k));
        if let Some(n) = n {
            // Only maps (string-keyed), not structs, own themselves.
            let map_field = matches!(
                &k[2..],
                "data"
                    | "binaryData"
                    | "stringData"
                    | "labels"
                    | "annotations"
                    | "matchLabels"
                    | "nodeSelector"
            );
            if map_field
                && n.as_object().is_some_and(|m| !m.is_empty())
                && o.is_none_or(Value::is_null)
            {
                c.member = true;
            }
            mark_created_maps(c, o, n);
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

/// Decodes a `fieldsV1` object.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::default();
    if let Some(o) = v.as_object() {
        for (k, child) in o {
            if k == "." {
                out.member = true;
                continue;
            }
            let mut node = from_fields_v1(child);
            if child.as_object().is_none_or(Map::is_empty) {
                node.member = true;
            }
            out.children.insert(k.clone(), node);
        }
    }
    out
}

/// Encodes a field set as a `fieldsV1` object.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut m = Map::new();
    if set.member && !set.children.is_empty() {
        m.insert(".".into(), Value::Object(Map::new()));
    }
    for (k, c) in &set.children {
        m.insert(k.clone(), to_fields_v1(c));
    }
    Value::Object(m)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::builtins;
    use serde_json::json;

    fn deployments() -> ResourceType {
        builtins()
            .into_iter()
            .find(|t| t.plural == "deployments")
            .unwrap()
    }

    fn path(els: &[&str]) -> Path {
        els.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trip_with_item_markers() {
        let rt = deployments();
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
        });
        let set = paths_of(&obj, &rt, Part::Main { with_status: false });
        let encoded = to_fields_v1(&set);
        assert_eq!(
            encoded,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"f\"": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}}
            })
        );
        assert_eq!(from_fields_v1(&encoded), set);
        assert!(!set.contains(&path(&["f:metadata", "f:name"])));
    }

    #[test]
    fn conflicts_only_where_values_differ() {
        let rt = deployments();
        let live = json!({"spec": {"replicas": 2, "paused": false}});
        let config = json!({"spec": {"replicas": 3, "paused": false}});
        let mine = paths_of(&config, &rt, Part::Main { with_status: false });
        let theirs = paths_of(&live, &rt, Part::Main { with_status: false });
        assert_eq!(
            conflicts(&mine, &theirs, Some(&config), Some(&live)),
            vec![path(&["f:spec", "f:replicas"])]
        );
    }

    #[test]
    fn removals_spare_fields_others_own_or_still_applied() {
        let rt = deployments();
        let main = Part::Main { with_status: false };
        let old = paths_of(&json!({"spec": {"a": 1, "b": 1, "c": {"d": 1}}}), &rt, main);
        let new = paths_of(&json!({"spec": {"c": {"e": 1}}}), &rt, main);
        let others = paths_of(&json!({"spec": {"b": 1}}), &rt, main);
        let mut gone = removals(&old, &new, &others);
        gone.sort();
        assert_eq!(
            gone,
            vec![path(&["f:spec", "f:a"]), path(&["f:spec", "f:c", "f:d"])]
        );
    }

    #[test]
    fn changed_lists_new_items_and_new_values() {
        let rt = deployments();
        let old =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let new = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "2"}, {"name": "b", "image": "1"}]}}}});
        let set = paths_of(&new, &rt, Part::Main { with_status: false });
        let c = changed(&set, Some(&old), Some(&new));
        let base = ["f:spec", "f:template", "f:spec", "f:containers"];
        let at = |tail: &[&str]| {
            let mut p = path(&base);
            p.extend(tail.iter().map(|s| s.to_string()));
            p
        };
        assert!(c.contains(&at(&["k:{\"name\":\"a\"}", "f:image"])));
        assert!(!c.contains(&at(&["k:{\"name\":\"a\"}"])));
        assert!(!c.contains(&at(&["k:{\"name\":\"a\"}", "f:name"])));
        assert!(c.contains(&at(&["k:{\"name\":\"b\"}"])));
        assert!(c.contains(&at(&["k:{\"name\":\"b\"}", "f:image"])));
    }

    #[test]
    fn remove_at_prunes_emptied_maps() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": {"y": 1}}});
        remove_at(&mut v, &path(&["f:spec", "f:x", "f:y"]), &|_| false);
        assert_eq!(v, json!({"metadata": {"labels": {"a": "1"}}, "spec": {}}));
        remove_at(&mut v, &path(&["f:metadata", "f:labels", "f:a"]), &|_| {
            false
        });
        assert_eq!(v, json!({"metadata": {}, "spec": {}}));
    }

    #[test]
    fn display_matches_the_server_format() {
        assert_eq!(
            display(&path(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"c\"}",
                "f:image"
            ])),
            ".spec.containers[name=\"c\"].image"
        );
    }
}
