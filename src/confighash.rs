//! Canonical config hashing and the stale-plan check.
//!
//! A vine's configuration snapshot is hashed as `sha256:` + the lowercase hex
//! sha256 of its **canonical JSON**. The canonical form follows RFC 8785
//! (JSON Canonicalization Scheme), which is what `JSON.stringify` with sorted
//! keys produces in JavaScript, so a control plane written in any language can
//! compute the same hash:
//!
//! - object members are sorted by key at every level, comparing the keys as
//!   UTF-16 code units (for keys in the Basic Multilingual Plane this is plain
//!   code point order);
//! - no whitespace between tokens;
//! - strings escape only `"`, `\` and control characters below U+0020
//!   (`\b \t \n \f \r` by name, others as `\u00XX` with lowercase hex); all
//!   other characters, including `/` and non-ASCII, are written as UTF-8;
//! - every number is written in its shortest form, as ECMAScript's
//!   `Number.prototype.toString` does for an IEEE-754 double: `1`, `1.0` and
//!   `1e0` are all written `1`; `0.1` stays `0.1`; `1e21` is written `1e+21`;
//!   `-0` is written `0`. Integers beyond ±2^53 lose precision as doubles, as
//!   they do in JavaScript.
//!
//! ```
//! use tendril::confighash::ConfigHash;
//! let a = ConfigHash::of(&serde_json::json!({"b": 1.0, "a": [true, null]}));
//! let b = ConfigHash::of(&serde_json::json!({"a": [true, null], "b": 1}));
//! assert_eq!(a, b);
//! assert!(a.to_string().starts_with("sha256:"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The message a stale plan is refused with (the job contract fixes its text).
pub const STALE_PLAN_MESSAGE: &str =
    "Configuration has changed since the plan was generated. Please re-plan.";

/// What can go wrong with config hashes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigHashError {
    /// A text is not of the form `sha256:<64 hex digits>`.
    #[error("`{text}` is not a config hash; give it as sha256:<64 lowercase hex digits>")]
    Malformed {
        /// The text that was given.
        text: String,
    },
}

/// The configuration changed since the plan was made: the plan must not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Configuration has changed since the plan was generated. Please re-plan.")]
pub struct StalePlan {
    /// The hash of the configuration now.
    pub current: ConfigHash,
    /// The hash recorded in the plan artifact's manifest.
    pub planned: ConfigHash,
}

/// The sha256 of a configuration's canonical JSON; shown as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigHash([u8; 32]);

impl ConfigHash {
    /// Hashes a configuration snapshot's canonical JSON.
    pub fn of(value: &Value) -> ConfigHash {
        ConfigHash(Sha256::digest(canonical_json(value).as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigHash({self})")
    }
}

impl FromStr for ConfigHash {
    type Err = ConfigHashError;

    /// Parses `sha256:<hex>` (hex digits in either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || ConfigHashError::Malformed {
            text: text.to_string(),
        };
        let hex_part = text.strip_prefix("sha256:").ok_or_else(malformed)?;
        let mut out = [0u8; 32];
        if hex_part.len() != 64 {
            return Err(malformed());
        }
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| malformed())?;
        Ok(ConfigHash(out))
    }
}

impl Serialize for ConfigHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Refuses a plan whose manifest hash differs from the current configuration's.
///
/// The error's message is exactly [`STALE_PLAN_MESSAGE`].
pub fn check_plan_freshness(current: &ConfigHash, manifest: &ConfigHash) -> Result<(), StalePlan> {
    if current == manifest {
        Ok(())
    } else {
        Err(StalePlan {
            current: *current,
            planned: *manifest,
        })
    }
}

/// The canonical JSON text of a value (see the module documentation).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(n)),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn format_number(n: &serde_json::Number) -> String {
    // serde_json never holds NaN or infinities, so every number is finite.
    let f = n.as_f64().unwrap_or(0.0);
    format_es_number(f)
}

/// ECMAScript `Number.prototype.toString` for a finite double.
fn format_es_number(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    if !f.is_finite() {
        return "null".to_string();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-tripping digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point relative to the digits
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e_sign = if e < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{e_sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{e_sign}{}", e.abs())
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_take_their_shortest_ecmascript_form() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123456.789, "123456.789"),
            (-0.0, "0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(format_es_number(*f), *want, "{f}");
        }
    }

    #[test]
    fn canonical_form_sorts_keys_everywhere_and_drops_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "z": {"b": 2, "a": [ {"y": 1, "x": 1.0} ]}, "a": "é/\n\u0001" }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            "{\"a\":\"é/\\n\\u0001\",\"z\":{\"a\":[{\"x\":1,\"y\":1}],\"b\":2}}"
        );
    }

    #[test]
    fn keys_compare_as_utf16_code_units() {
        // U+FF61 sorts after U+1F600 in UTF-16 (0xD83D < 0xFF61) but before it by code point.
        let v = json!({"\u{ff61}": 1, "\u{1f600}": 2});
        assert_eq!(canonical_json(&v), "{\"\u{1f600}\":2,\"\u{ff61}\":1}");
    }

    #[test]
    fn equal_configs_hash_alike_and_changes_do_not() {
        let a = ConfigHash::of(&json!({"region": "eu-west-1", "size": 2}));
        let b =
            ConfigHash::of(&serde_json::from_str(r#"{"size":2.0,"region":"eu-west-1"}"#).unwrap());
        let c = ConfigHash::of(&json!({"region": "eu-west-1", "size": 3}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The known digest of `{}`'s canonical form "{}".
        assert_eq!(
            ConfigHash::of(&json!({})).to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed() {
        let h = ConfigHash::of(&json!({"a": 1}));
        let back: ConfigHash = h.to_string().parse().unwrap();
        assert_eq!(h, back);
        assert!("sha256:abc".parse::<ConfigHash>().is_err());
        assert!("md5:00".parse::<ConfigHash>().is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ConfigHash>(&json).unwrap(), h);
    }

    #[test]
    fn freshness_check_gives_the_contract_message() {
        let a = ConfigHash::of(&json!({"a": 1}));
        let b = ConfigHash::of(&json!({"a": 2}));
        assert!(check_plan_freshness(&a, &a).is_ok());
        let err = check_plan_freshness(&a, &b).unwrap_err();
        assert_eq!(err.to_string(), STALE_PLAN_MESSAGE);
        assert_eq!(err.planned, b);
    }
}
