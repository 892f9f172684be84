//! Terraform's machine-readable UI stream (`-json`), parsed into typed events.
//!
//! Each line terraform prints with `-json` is a JSON object with a `type`;
//! the kinds tendril acts on become [`Event`] variants, the rest are kept as
//! [`Event::Log`]. `terraform init -json` also prints plain-text lines; they
//! become [`Event::Text`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One diagnostic (error or warning) terraform reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: String,
    /// One-line summary.
    pub summary: String,
    /// Longer explanation (may be empty).
    #[serde(default)]
    pub detail: String,
    /// The resource the diagnostic is about, when terraform names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }
}

/// Resource-change counts terraform reports in its `change_summary` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    /// Resources to add (or added).
    pub add: u64,
    /// Resources to change in place (or changed).
    pub change: u64,
    /// Resources to destroy (or destroyed).
    pub remove: u64,
    /// Resources to import (or imported).
    #[serde(default)]
    pub import: u64,
}

/// A typed event from terraform's `-json` stream, forwarded live to a caller's sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The terraform version banner.
    Version {
        /// The version terraform reports.
        terraform: String,
    },
    /// plan: a change terraform plans to make.
    PlannedChange {
        /// Resource address.
        address: String,
        /// create, update, delete, replace, read, noop, ...
        action: String,
    },
    /// apply: an operation on a resource started.
    ApplyStart {
        /// Resource address.
        address: String,
        /// create, update, delete, ...
        action: String,
    },
    /// apply: an operation is still running.
    ApplyProgress {
        /// Resource address.
        address: String,
        /// create, update, delete, ...
        action: String,
        /// Seconds since it started.
        elapsed_seconds: u64,
    },
    /// apply: an operation finished.
    ApplyComplete {
        /// Resource address.
        address: String,
        /// create, update, delete, ...
        action: String,
        /// The resource's id, when it has one.
        id: Option<String>,
        /// Seconds it took.
        elapsed_seconds: u64,
    },
    /// apply: an operation failed (the matching [`Event::Diagnostic`] follows).
    ApplyErrored {
        /// Resource address.
        address: String,
        /// create, update, delete, ...
        action: String,
        /// Seconds until it failed.
        elapsed_seconds: u64,
    },
    /// A provisioner (e.g. `local-exec`) printed a line or changed state.
    Provisioner {
        /// Resource address.
        address: String,
        /// The provisioner's type.
        provisioner: String,
        /// `start`, `progress`, `complete` or `errored`.
        phase: String,
        /// The line it printed (progress only).
        output: Option<String>,
    },
    /// Resource counts of the plan or apply.
    ChangeSummary {
        /// `plan` or `apply`.
        operation: String,
        /// The counts.
        changes: ChangeCounts,
    },
    /// Output names and whether each is sensitive (values are not carried here).
    Outputs {
        /// `(name, sensitive)` pairs.
        outputs: Vec<(String, bool)>,
    },
    /// An error or warning.
    Diagnostic(Diagnostic),
    /// Any other JSON message (refresh, init progress, log lines ...).
    Log {
        /// terraform's `@level`.
        level: String,
        /// terraform's `@message`.
        message: String,
    },
    /// A line of plain text (terraform init mixes them into its JSON output).
    Text {
        /// The line.
        line: String,
    },
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

/// Parses one line of terraform's `-json` output.
pub fn parse_line(line: &str) -> Event {
    let trimmed = line.trim();
    let Ok(v) = serde_json::from_str::<Value>(trimmed) else {
        return Event::Text {
            line: line.to_string(),
        };
    };
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Event::Text {
            line: line.to_string(),
        };
    };
    let address = |section: &str| {
        str_at(&v, &[section, "resource", "addr"])
            .unwrap_or_default()
            .to_string()
    };
    let action = |section: &str| {
        str_at(&v, &[section, "action"])
            .unwrap_or_default()
            .to_string()
    };
    match kind {
        "version" => Event::Version {
            terraform: str_at(&v, &["terraform"]).unwrap_or_default().to_string(),
        },
        "planned_change" => Event::PlannedChange {
            address: address("change"),
            action: action("change"),
        },
        "apply_start" => Event::ApplyStart {
            address: address("hook"),
            action: action("hook"),
        },
        "apply_progress" => Event::ApplyProgress {
            address: address("hook"),
            action: action("hook"),
            elapsed_seconds: u64_at(&v, &["hook", "elapsed_seconds"]),
        },
        "apply_complete" => Event::ApplyComplete {
            address: address("hook"),
            action: action("hook"),
            id: str_at(&v, &["hook", "id_value"]).map(str::to_string),
            elapsed_seconds: u64_at(&v, &["hook", "elapsed_seconds"]),
        },
        "apply_errored" => Event::ApplyErrored {
            address: address("hook"),
            action: action("hook"),
            elapsed_seconds: u64_at(&v, &["hook", "elapsed_seconds"]),
        },
        "provision_start" | "provision_progress" | "provision_complete" | "provision_errored" => {
            Event::Provisioner {
                address: address("hook"),
                provisioner: str_at(&v, &["hook", "provisioner"])
                    .unwrap_or_default()
                    .to_string(),
                phase: kind.trim_start_matches("provision_").to_string(),
                output: str_at(&v, &["hook", "output"]).map(str::to_string),
            }
        }
        "change_summary" => Event::ChangeSummary {
            operation: str_at(&v, &["changes", "operation"])
                .unwrap_or_default()
                .to_string(),
            changes: v
                .get("changes")
                .and_then(|c| ChangeCounts::deserialize(c).ok())
                .unwrap_or_default(),
        },
        "outputs" => {
            let mut outputs: Vec<(String, bool)> = v
                .get("outputs")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, o)| {
                            let sensitive =
                                o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
                            (k.clone(), sensitive)
                        })
                        .collect()
                })
                .unwrap_or_default();
            outputs.sort();
            Event::Outputs { outputs }
        }
        "diagnostic" => match v.get("diagnostic").map(Diagnostic::deserialize) {
            Some(Ok(d)) => Event::Diagnostic(d),
            _ => Event::Log {
                level: str_at(&v, &["@level"]).unwrap_or_default().to_string(),
                message: str_at(&v, &["@message"]).unwrap_or_default().to_string(),
            },
        },
        _ => Event::Log {
            level: str_at(&v, &["@level"]).unwrap_or_default().to_string(),
            message: str_at(&v, &["@message"]).unwrap_or_default().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apply_hooks_and_diagnostics() {
        let start = r#"{"@level":"info","@message":"x: Creating...","hook":{"resource":{"addr":"terraform_data.a"},"action":"create"},"type":"apply_start"}"#;
        assert_eq!(
            parse_line(start),
            Event::ApplyStart {
                address: "terraform_data.a".into(),
                action: "create".into()
            }
        );
        let done = r#"{"hook":{"resource":{"addr":"terraform_data.a"},"action":"create","id_key":"id","id_value":"abc","elapsed_seconds":2},"type":"apply_complete"}"#;
        assert_eq!(
            parse_line(done),
            Event::ApplyComplete {
                address: "terraform_data.a".into(),
                action: "create".into(),
                id: Some("abc".into()),
                elapsed_seconds: 2
            }
        );
        let diag = r#"{"@level":"error","diagnostic":{"severity":"error","summary":"local-exec provisioner error","detail":"exit 3","address":"terraform_data.bad","range":{}},"type":"diagnostic"}"#;
        let Event::Diagnostic(d) = parse_line(diag) else {
            panic!("not a diagnostic")
        };
        assert!(d.is_error());
        assert_eq!(d.address.as_deref(), Some("terraform_data.bad"));
        let sum = r#"{"changes":{"add":2,"change":1,"import":0,"remove":3,"operation":"apply"},"type":"change_summary"}"#;
        assert_eq!(
            parse_line(sum),
            Event::ChangeSummary {
                operation: "apply".into(),
                changes: ChangeCounts {
                    add: 2,
                    change: 1,
                    remove: 3,
                    import: 0
                }
            }
        );
    }

    #[test]
    fn plain_text_lines_are_kept_as_text() {
        assert_eq!(
            parse_line("Successfully configured the backend \"s3\"!"),
            Event::Text {
                line: "Successfully configured the backend \"s3\"!".into()
            }
        );
    }
}
