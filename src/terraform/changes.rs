//! The change summary of a saved plan, from `terraform show -json PLANFILE`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NotAnObject;

/// What a plan will do: counts and the resource addresses per kind of change.
///
/// `add` counts resources created (including the create half of a replace),
/// `remove` those destroyed (including the destroy half of a replace), as
/// terraform's own summary line does; `replace` counts replacements on their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeSummary {
    /// Resources created, plus replacements.
    pub add: u64,
    /// Resources updated in place.
    pub change: u64,
    /// Resources destroyed, plus replacements.
    pub remove: u64,
    /// Resources replaced (destroyed and created again).
    pub replace: u64,
    /// Addresses of resources to create.
    #[serde(default)]
    pub create_addresses: Vec<String>,
    /// Addresses of resources to update in place.
    #[serde(default)]
    pub update_addresses: Vec<String>,
    /// Addresses of resources to destroy.
    #[serde(default)]
    pub delete_addresses: Vec<String>,
    /// Addresses of resources to replace.
    #[serde(default)]
    pub replace_addresses: Vec<String>,
    /// Whether output values change.
    #[serde(default)]
    pub outputs_change: bool,
}

impl ChangeSummary {
    /// Whether applying the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add == 0 && self.change == 0 && self.remove == 0 && !self.outputs_change
    }

    /// Reads `terraform show -json` of a saved plan.
    pub fn from_show_json(v: &Value) -> Result<ChangeSummary, NotAnObject> {
        let Some(obj) = v.as_object() else {
            return Err(NotAnObject::new("show", v));
        };
        let mut s = ChangeSummary::default();
        let changes = obj
            .get("resource_changes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for rc in &changes {
            let address = rc
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let actions: Vec<&str> = rc
                .pointer("/change/actions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match actions.as_slice() {
                ["create"] => s.create_addresses.push(address),
                ["update"] => s.update_addresses.push(address),
                ["delete"] => s.delete_addresses.push(address),
                ["delete", "create"] | ["create", "delete"] => s.replace_addresses.push(address),
                _ => {} // no-op, read, forget
            }
        }
        s.replace = s.replace_addresses.len() as u64;
        s.add = s.create_addresses.len() as u64 + s.replace;
        s.change = s.update_addresses.len() as u64;
        s.remove = s.delete_addresses.len() as u64 + s.replace;
        s.outputs_change = obj
            .get("output_changes")
            .and_then(Value::as_object)
            .is_some_and(|m| {
                m.values().any(|c| {
                    c.pointer("/actions")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|x| x.as_str() != Some("no-op")))
                })
            });
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_each_kind_of_change() {
        let v = json!({"resource_changes": [
            {"address": "a.one", "change": {"actions": ["create"]}},
            {"address": "a.two", "change": {"actions": ["update"]}},
            {"address": "a.three", "change": {"actions": ["delete"]}},
            {"address": "a.four", "change": {"actions": ["delete", "create"]}},
            {"address": "a.five", "change": {"actions": ["no-op"]}}
        ], "output_changes": {"x": {"actions": ["no-op"]}}});
        let s = ChangeSummary::from_show_json(&v).unwrap();
        assert_eq!((s.add, s.change, s.remove, s.replace), (2, 1, 2, 1));
        assert_eq!(s.replace_addresses, vec!["a.four"]);
        assert!(!s.outputs_change);
        assert!(!s.is_empty());
    }

    #[test]
    fn a_document_that_is_not_an_object_is_named() {
        let e = ChangeSummary::from_show_json(&json!(["x"])).unwrap_err();
        assert_eq!(e.found, "an array");
        assert!(
            e.to_string()
                .contains("`terraform show -json` printed an array"),
            "{e}"
        );
    }
}
