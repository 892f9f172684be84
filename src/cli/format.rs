//! What the subcommands share in their flags: `-o, --output text|json|yaml`
//! always names a format (files are `--output-file`/`--out-dir`), and
//! durations are Go-style (`90s`, `10m`, `1h30m`), as in kubectl and helm.

use std::io::Write as _;

use serde::Serialize;

/// `-o, --output`: how a command prints its result on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: a summary on stderr (render: the YAML itself).
    #[default]
    Text,
    /// The result as JSON on stdout (the human summary still goes to stderr).
    Json,
    /// The result as YAML on stdout (the human summary still goes to stderr).
    Yaml,
}

/// A result that could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The value does not serialize.
    #[error("cannot serialize the result as {format}: {reason}")]
    Serialize {
        /// `json` or `yaml`.
        format: &'static str,
        /// The serializer's message.
        reason: String,
    },
    /// Stdout is closed or full.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl OutputFormat {
    /// `value` as this format's document, or `None` for text.
    pub fn document<T: Serialize>(self, value: &T) -> Result<Option<String>, OutputError> {
        match self {
            OutputFormat::Text => Ok(None),
            OutputFormat::Json => serde_json::to_string_pretty(value)
                .map(|mut s| {
                    s.push('\n');
                    Some(s)
                })
                .map_err(|e| OutputError::Serialize {
                    format: "json",
                    reason: e.to_string(),
                }),
            OutputFormat::Yaml => {
                serde_saphyr::to_string(value)
                    .map(Some)
                    .map_err(|e| OutputError::Serialize {
                        format: "yaml",
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Prints `value` on stdout as JSON or YAML; prints nothing for text.
    pub fn print<T: Serialize>(self, value: &T) -> Result<(), OutputError> {
        let Some(text) = self.document(value)? else {
            return Ok(());
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(OutputError::Stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_print_the_same_value() {
        let value = serde_json::json!({"status": "SUCCESS", "n": 2});
        assert_eq!(OutputFormat::Text.document(&value).unwrap(), None);
        let json = OutputFormat::Json.document(&value).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            value
        );
        let yaml = OutputFormat::Yaml.document(&value).unwrap().unwrap();
        assert_eq!(
            serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap(),
            value
        );
    }
}
