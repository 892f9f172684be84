//! Typed `terraform output -json`: each output keeps its type and `sensitive` flag.

use crate::Secret;
use crate::secret::REDACTED;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::NotAnObject;

/// A Terraform type, as `terraform output -json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputType {
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<OutputType>),
    /// `set(T)`.
    Set(Box<OutputType>),
    /// `map(T)`.
    Map(Box<OutputType>),
    /// `object({...})`.
    Object(BTreeMap<String, OutputType>),
    /// `tuple([...])`.
    Tuple(Vec<OutputType>),
    /// `dynamic` (or a type tendril does not know).
    Dynamic,
}

impl OutputType {
    /// Reads terraform's JSON type expression (`"string"`, `["list","string"]`, ...).
    pub fn from_json(v: &Value) -> OutputType {
        match v {
            Value::String(s) => match s.as_str() {
                "string" => OutputType::String,
                "number" => OutputType::Number,
                "bool" => OutputType::Bool,
                _ => OutputType::Dynamic,
            },
            Value::Array(parts) => {
                let kind = parts.first().and_then(Value::as_str).unwrap_or_default();
                let arg = parts.get(1).unwrap_or(&Value::Null);
                match kind {
                    "list" => OutputType::List(Box::new(OutputType::from_json(arg))),
                    "set" => OutputType::Set(Box::new(OutputType::from_json(arg))),
                    "map" => OutputType::Map(Box::new(OutputType::from_json(arg))),
                    "object" => OutputType::Object(
                        arg.as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, t)| (k.clone(), OutputType::from_json(t)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    "tuple" => OutputType::Tuple(
                        arg.as_array()
                            .map(|ts| ts.iter().map(OutputType::from_json).collect())
                            .unwrap_or_default(),
                    ),
                    _ => OutputType::Dynamic,
                }
            }
            _ => OutputType::Dynamic,
        }
    }
}

/// An output's value: plain, or wrapped as a [`Secret`] when terraform marks it sensitive.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValue {
    /// A non-sensitive value.
    Plain(Value),
    /// A sensitive value; Debug/Display print `[redacted]`.
    Sensitive(Secret<Value>),
}

/// One terraform output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Its type.
    pub ty: OutputType,
    /// Its value.
    pub value: OutputValue,
}

impl Output {
    /// Whether terraform marks it sensitive.
    pub fn is_sensitive(&self) -> bool {
        matches!(self.value, OutputValue::Sensitive(_))
    }

    /// The value, sensitive or not. Call it only where the value is used.
    pub fn expose(&self) -> &Value {
        match &self.value {
            OutputValue::Plain(v) => v,
            OutputValue::Sensitive(s) => s.expose(),
        }
    }

    /// The value as it may appear in a report: sensitive values become `"[redacted]"`.
    pub fn redacted(&self) -> Value {
        match &self.value {
            OutputValue::Plain(v) => v.clone(),
            OutputValue::Sensitive(_) => Value::String(REDACTED.to_string()),
        }
    }
}

/// All outputs of a configuration, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs(pub BTreeMap<String, Output>);

impl Outputs {
    /// Parses `terraform output -json`.
    pub fn from_json(v: &Value) -> Result<Outputs, NotAnObject> {
        let map = v.as_object().ok_or_else(|| NotAnObject::new("output", v))?;
        Ok(Outputs::from_map(map))
    }

    /// Reads the members of `terraform output -json` (name → `{sensitive,
    /// type, value}`); a member without `type` is `dynamic`, one without
    /// `value` is null.
    pub fn from_map(map: &Map<String, Value>) -> Outputs {
        let mut out = BTreeMap::new();
        for (name, o) in map {
            let sensitive = o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
            let value = o.get("value").cloned().unwrap_or(Value::Null);
            let ty = o
                .get("type")
                .map(OutputType::from_json)
                .unwrap_or(OutputType::Dynamic);
            let value = if sensitive {
                OutputValue::Sensitive(Secret::new(value))
            } else {
                OutputValue::Plain(value)
            };
            out.insert(name.clone(), Output { ty, value });
        }
        Outputs(out)
    }

    /// One output.
    pub fn get(&self, name: &str) -> Option<&Output> {
        self.0.get(name)
    }

    /// A string output's value (sensitive or not), if it exists and is a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|o| o.expose().as_str())
    }

    /// All outputs as a JSON object for reports, sensitive values redacted.
    pub fn to_report_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, o)| (k.clone(), o.redacted()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_types_and_redacts_sensitive_values() {
        let v = json!({
            "name": {"sensitive": false, "type": "string", "value": "shop"},
            "pw": {"sensitive": true, "type": "string", "value": "hunter2"},
            "obj": {"sensitive": false, "type": ["object", {"a": "number", "b": ["tuple", ["bool", "string"]]}],
                    "value": {"a": 1, "b": [true, "x"]}},
            "ids": {"sensitive": false, "type": ["list", "string"], "value": ["a"]}
        });
        let outs = Outputs::from_json(&v).unwrap();
        assert_eq!(outs.get("name").unwrap().ty, OutputType::String);
        assert_eq!(
            outs.get("ids").unwrap().ty,
            OutputType::List(Box::new(OutputType::String))
        );
        let OutputType::Object(fields) = &outs.get("obj").unwrap().ty else {
            panic!("object type expected")
        };
        assert_eq!(
            fields["b"],
            OutputType::Tuple(vec![OutputType::Bool, OutputType::String])
        );
        let pw = outs.get("pw").unwrap();
        assert!(pw.is_sensitive());
        assert_eq!(pw.expose(), "hunter2");
        assert!(!format!("{outs:?}").contains("hunter2"));
        assert_eq!(outs.to_report_json()["pw"], "[redacted]");
        assert_eq!(outs.string("name"), Some("shop"));
    }

    #[test]
    fn a_document_that_is_not_an_object_is_named() {
        let e = Outputs::from_json(&json!("x")).unwrap_err();
        assert!(
            e.to_string()
                .contains("`terraform output -json` printed a string"),
            "{e}"
        );
    }
}
