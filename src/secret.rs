//! [`Secret`]: a value that must never reach a log line.
//!
//! Every module may use this type. Passwords, tokens, credentials and
//! Terraform outputs marked sensitive are wrapped in it; `Debug` and `Display`
//! print `[redacted]`, and the value is only reachable through
//! [`Secret::expose`], which makes every place that reads it easy to find.

use std::fmt;

/// The text printed instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// A value whose `Debug` and `Display` print `[redacted]`.
///
/// Serialization writes the real value: a `Secret` only goes into a report or
/// a file through a field whose purpose is to carry it.
///
/// ```
/// use tendril::Secret;
/// let token = Secret::new("hunter2".to_string());
/// assert_eq!(format!("{token:?}"), "[redacted]");
/// assert_eq!(token.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// Reads the value. Call it only where the value is actually used.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new(String::from("s3cr3t"));
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Secret<String>,
        }
        let h = Holder {
            password: s.clone(),
        };
        assert!(!format!("{h:?}").contains("s3cr3t"));
        assert_eq!(s.expose(), "s3cr3t");
    }

    #[test]
    fn serializes_the_value_transparently() {
        let s = Secret::new(String::from("v"));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"v\"");
        let back: Secret<String> = serde_json::from_str("\"w\"").unwrap();
        assert_eq!(back.expose(), "w");
    }
}
