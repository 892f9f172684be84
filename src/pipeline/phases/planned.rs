//! What a saved plan says its outputs will be, for a DEPLOY `--dry-run`
//! (which never runs `terraform apply`).
//!
//! `terraform show -json PLANFILE` carries each output's value under
//! `planned_values.outputs` when it is known at plan time, and marks the
//! others `after_unknown` under `output_changes`. [`PlannedOutputs::from_show_json`]
//! keeps both: the known values, and the names of the unknown ones, which
//! [`PlannedOutputs::with_markers`] fills with [`UNKNOWN`] so that facts and
//! manifests can still be rendered and show what is not known yet.

use serde_json::{Map, Value, json};

use crate::terraform::Outputs;

/// What an output that is only known after apply shows in a dry run.
pub const UNKNOWN: &str = "(known after apply)";

/// The outputs of a saved plan.
#[derive(Debug, Clone, Default)]
pub struct PlannedOutputs {
    /// Outputs whose values are known, in `terraform output -json` form.
    known: Map<String, Value>,
    /// Names of outputs known only after apply, with whether each is sensitive.
    unknown: Vec<(String, bool)>,
}

impl PlannedOutputs {
    /// Reads the outputs of `terraform show -json PLANFILE`.
    pub fn from_show_json(show: &Value) -> PlannedOutputs {
        let planned = show
            .pointer("/planned_values/outputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let unknown_flag = |name: &str| {
            show.pointer(&format!("/output_changes/{}/after_unknown", escape(name)))
                .is_some_and(|v| v != &Value::Bool(false))
        };
        let mut out = PlannedOutputs::default();
        for (name, o) in planned {
            let sensitive = o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
            match o.get("value") {
                Some(_) if !unknown_flag(&name) => {
                    out.known.insert(name, o);
                }
                _ => out.unknown.push((name, sensitive)),
            }
        }
        out
    }

    /// The names of the outputs known only after apply.
    pub fn unknown_names(&self) -> Vec<&str> {
        self.unknown.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The known outputs only.
    pub fn known(&self) -> Outputs {
        Outputs::from_map(&self.known)
    }

    /// Every output; the unknown ones hold the string [`UNKNOWN`].
    pub fn with_markers(&self) -> Outputs {
        let mut all = self.known.clone();
        for (name, sensitive) in &self.unknown {
            all.insert(
                name.clone(),
                json!({"sensitive": sensitive, "type": "string", "value": UNKNOWN}),
            );
        }
        Outputs::from_map(&all)
    }
}

/// Escapes a key for a JSON pointer.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_outputs_are_told_apart() {
        let show = json!({
            "planned_values": {"outputs": {
                "endpoint": {"sensitive": false, "type": "string", "value": "https://x"},
                "name": {"sensitive": false},
                "secret": {"sensitive": true},
            }},
            "output_changes": {
                "endpoint": {"after_unknown": false},
                "name": {"after_unknown": true},
                "secret": {"after_unknown": true},
            },
        });
        let p = PlannedOutputs::from_show_json(&show);
        assert_eq!(p.unknown_names(), vec!["name", "secret"]);
        assert_eq!(p.known().string("endpoint"), Some("https://x"));
        assert!(p.known().get("name").is_none());
        let marked = p.with_markers();
        assert_eq!(marked.string("name"), Some(UNKNOWN));
        assert_eq!(marked.to_report_json()["secret"], "[redacted]");
    }
}
