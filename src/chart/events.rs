//! Rendered YAML to JSON values straight from the YAML parser's events.
//!
//! Parsing the rendered templates is the largest cost of a render, and most of
//! it is serde-saphyr's general deserializer machinery, not the parser
//! underneath it. Rendered Kubernetes manifests use a small part of YAML:
//! mappings with string keys, sequences, and scalars. This module walks the
//! events of serde-saphyr's own parser (`granit_parser`, re-exported by
//! serde-saphyr) and builds the values directly for that part.
//!
//! It never decides anything serde-saphyr would decide differently:
//!
//! - A plain scalar that could resolve to something other than a string (a
//!   null, a YAML 1.1 boolean, a number, `.inf`, ...) is resolved by
//!   serde-saphyr itself, except the spellings every YAML schema reads the
//!   same way: the nulls, `true`, `false`, and decimal integers without a
//!   leading zero.
//! - Quoted and block scalars are strings, as serde-saphyr makes them untagged.
//! - Anything else — tags, anchors and aliases, merge keys (`<<`), directives,
//!   duplicate keys, keys that are not plain strings, text the parser rejects —
//!   makes [`documents`] return `None`, and the caller parses the text with
//!   serde-saphyr, which gives the values or its own error.
//!
//! The tests below check the two agree on every rendering of the embedded
//! Argo CD chart with the reference value sets and on a list of tricky scalars.

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// One collection being built.
enum Frame {
    /// A sequence and its items so far.
    Seq(Vec<Value>),
    /// A mapping, its entries so far, and the key waiting for its value.
    Map(Map<String, Value>, Option<String>),
}

/// Parses a multi-document YAML stream into one value per document (an
/// empty document is `null`), or `None` when the text needs serde-saphyr
/// (see the module documentation).
pub(crate) fn documents(text: &str) -> Option<Vec<Value>> {
    let options = serde_saphyr::granit_parser::options! { emit_comments: false };
    let mut parser = Parser::new_from_str_with_options(text, options);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    while let Some(next) = parser.next_event() {
        let (event, _span) = next.ok()?;
        match event {
            Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_, version) => {
                if version.is_some() {
                    return None;
                }
                root = None;
            }
            Event::DocumentEnd => docs.push(root.take().unwrap_or(Value::Null)),
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                if let Some(Frame::Map(map, key @ None)) = stack.last_mut() {
                    *key = Some(mapping_key(&text, style, map)?);
                    continue;
                }
                let value = match style {
                    ScalarStyle::Plain => plain_scalar(&text)?,
                    _ => Value::String(text.into_owned()),
                };
                add(&mut stack, &mut root, value)?;
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                // A collection as a mapping key cannot be a JSON key.
                if let Some(Frame::Map(_, None)) = stack.last() {
                    return None;
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new()),
                    _ => Frame::Map(Map::new(), None),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let value = match stack.pop()? {
                    Frame::Seq(items) => Value::Array(items),
                    Frame::Map(map, None) => Value::Object(map),
                    Frame::Map(_, Some(_)) => return None,
                };
                add(&mut stack, &mut root, value)?;
            }
            // Aliases, anchors and anything newer: serde-saphyr knows them.
            _ => return None,
        }
    }
    if stack.is_empty() { Some(docs) } else { None }
}

/// Adds a finished value to the collection being built, or makes it the
/// document's root.
fn add(stack: &mut [Frame], root: &mut Option<Value>, value: Value) -> Option<()> {
    match stack.last_mut() {
        Some(Frame::Seq(items)) => items.push(value),
        Some(Frame::Map(map, key)) => {
            map.insert(key.take()?, value);
        }
        None => {
            if root.replace(value).is_some() {
                return None;
            }
        }
    }
    Some(())
}

/// A mapping key: a string serde-saphyr would read as the same string, not
/// already in `map`.
fn mapping_key(text: &str, style: ScalarStyle, map: &Map<String, Value>) -> Option<String> {
    if matches!(style, ScalarStyle::Plain) && (may_not_be_string(text) || text == "<<") {
        return None;
    }
    if map.contains_key(text) {
        return None;
    }
    Some(text.to_string())
}

/// Whether a plain scalar might resolve to something other than a string:
/// empty, `~`, a word YAML 1.1 reads as null or a boolean (any case), or text
/// starting with a digit or `.`, after an optional sign. A superset of what
/// serde-saphyr resolves to a null, a boolean or a number.
fn may_not_be_string(text: &str) -> bool {
    const WORDS: [&str; 11] = [
        "null", "true", "false", "yes", "no", "y", "n", "on", "off", "~", "",
    ];
    if WORDS.iter().any(|w| text.eq_ignore_ascii_case(w)) {
        return true;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
}

/// The value of a plain scalar.
fn plain_scalar(text: &str) -> Option<Value> {
    if !may_not_be_string(text) {
        return Some(Value::String(text.to_string()));
    }
    match text {
        // serde-saphyr's null spellings, exactly (`nULL` is a string).
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Some(n) = decimal_integer(text) {
        return Some(Value::Number(n));
    }
    resolve_with_serde_saphyr(text)
}

/// `0`, or an optionally negative decimal integer without a leading zero that
/// fits 64 bits: an integer in every YAML schema.
fn decimal_integer(text: &str) -> Option<Number> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !well_formed {
        return None;
    }
    if negative {
        digits
            .parse::<i64>()
            .ok()
            .and_then(|v| v.checked_neg())
            .map(Number::from)
    } else {
        digits.parse::<u64>().ok().map(Number::from)
    }
}

/// Lets serde-saphyr resolve a plain scalar, parsed alone as a document. Only
/// text made of letters, digits and `._+-` (or `~`) is given to it that way,
/// where it reads as the same single plain scalar; anything else (`1:30`,
/// `...`) returns `None`.
fn resolve_with_serde_saphyr(text: &str) -> Option<Value> {
    let simple = text == "~"
        || (!text.is_empty()
            && !text.starts_with("..")
            && !text.starts_with("--")
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')));
    if !simple {
        return None;
    }
    match serde_saphyr::from_str_with_options::<Value>(text, super::values::yaml_options()) {
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use crate::chart::{Chart, RenderOptions, Values};

    /// What serde-saphyr makes of `text`, the way the chart module calls it.
    fn saphyr(text: &str) -> Result<Vec<Value>, String> {
        serde_saphyr::from_multiple_with_options::<Value>(
            text,
            crate::chart::values::yaml_options(),
        )
        .map_err(|e| e.to_string())
    }

    fn without_nulls(docs: Vec<Value>) -> Vec<Value> {
        docs.into_iter().filter(|d| !d.is_null()).collect()
    }

    /// Every template output of `chart` rendered with `values_yaml` is read
    /// by the fast path, to the same values serde-saphyr gives. Returns how
    /// many objects that was.
    fn check_renderings(chart: &Chart, values_yaml: &str, inputs: &[(&str, &str)]) -> usize {
        let mut values = Values::new();
        values.merge_yaml(values_yaml, "test values").unwrap();
        let mut opts = RenderOptions::new("release", "ns").with_values(values);
        for (k, v) in inputs {
            opts = opts.with_input(*k, Secret::new(v.to_string()));
        }
        let mut checked = 0;
        for (path, text) in chart.render_raw(&opts).unwrap() {
            if text.trim().is_empty() {
                continue;
            }
            let fast = documents(&text)
                .unwrap_or_else(|| panic!("{path}: the fast path gave up on this rendering"));
            let slow = saphyr(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            let fast = without_nulls(fast);
            assert_eq!(fast, without_nulls(slow), "{path}");
            checked += fast.len();
        }
        checked
    }

    #[test]
    fn embedded_argocd_renderings_take_the_fast_path_and_agree() {
        let chart = Chart::embedded("argocd").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/argocd-values");
        let mut sets = vec![String::new()];
        for name in ["default", "ingress", "lb-insecure", "private-repo"] {
            sets.push(std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap());
        }
        for values in &sets {
            let checked = check_renderings(&chart, values, &[("redis_password", "pw")]);
            // 46 to 53 objects, depending on the set (the CRDs are not templates).
            assert!(checked >= 40, "only {checked} objects rendered");
        }
    }

    /// Scalars whose type YAML decides: each, as a mapping value, a sequence
    /// item and a whole document, gives what serde-saphyr gives.
    const SCALARS: &[&str] = &[
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "nULL",
        "true",
        "True",
        "TRUE",
        "tRUE",
        "false",
        "yes",
        "Yes",
        "NO",
        "on",
        "Off",
        "y",
        "N",
        "0",
        "-0",
        "+0",
        "7",
        "-7",
        "+7",
        "007",
        "-007",
        "0o17",
        "0O17",
        "0x1F",
        "0X1F",
        "0b101",
        "1_000",
        "1.5",
        "-1.5",
        ".5",
        "5.",
        "1e3",
        "1E-3",
        "6.02e+23",
        ".inf",
        "-.inf",
        "+.INF",
        ".nan",
        ".NaN",
        "-.nan",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1e999",
        "100m",
        "1Gi",
        "v3.4.4",
        "1.2.3",
        "0.0.0.0",
        "-",
        "--port",
        "-x",
        "+",
        ".",
        ".foo",
        "argocd",
        "yesterday",
        "onward",
        "/bin/sh",
        "a b",
        "\"quoted 1\"",
        "'1'",
        "\"\"",
        "''",
        "|\n  block\n",
    ];

    #[test]
    fn tricky_scalars_agree_with_serde_saphyr() {
        let mut fast_taken = 0;
        for scalar in SCALARS {
            for text in [
                format!("key: {scalar}\n"),
                format!("- {scalar}\n- after\n"),
                format!("{scalar}\n"),
            ] {
                let slow = saphyr(&text);
                // Where the fast path gives up, serde-saphyr is the answer by definition.
                if let Some(fast) = documents(&text) {
                    let slow = slow.unwrap_or_else(|e| {
                        panic!("{text:?}: fast path read it, serde-saphyr refused: {e}")
                    });
                    assert_eq!(without_nulls(fast), without_nulls(slow), "{text:?}");
                    fast_taken += 1;
                }
            }
        }
        // Most of the list is read directly; only odd spellings go back.
        assert!(
            fast_taken > SCALARS.len() * 2,
            "fast path taken {fast_taken} times"
        );
    }

    #[test]
    fn common_manifest_scalars_are_read_directly() {
        let text = "a: 8080\nb: true\nc: ''\nd:\ne: ~\nf: v1\ng: 1.5\nh: yes\ni: -3\nj: |\n  x\n";
        let docs = documents(text).expect("fast path");
        assert_eq!(
            docs,
            vec![serde_json::json!({
                "a": 8080, "b": true, "c": "", "d": null, "e": null, "f": "v1",
                "g": 1.5, "h": true, "i": -3, "j": "x\n"
            })]
        );
    }

    #[test]
    fn what_serde_saphyr_must_decide_is_left_to_it() {
        for text in [
            "a: &x 1\nb: *x\n",                // anchor and alias
            "a: !!str 1\n",                    // tag
            "base: &b {x: 1}\nm:\n  <<: *b\n", // merge key
            "a: 1\na: 2\n",                    // duplicate key
            "%YAML 1.2\n---\na: 1\n",          // directive
            "? [a, b]\n: 1\n",                 // collection as a key
            "1: one\n",                        // key that is not a plain string
            "a: 1:30\n",                       // a spelling not resolved alone
            "a: [1, 2\n",                      // not YAML
        ] {
            assert_eq!(documents(text), None, "{text:?}");
        }
    }

    #[test]
    fn documents_are_split_and_empty_ones_are_null() {
        let docs = documents("a: 1\n---\n# only a comment\n---\n- x\n").expect("fast path");
        assert_eq!(without_nulls(docs.clone()).len(), 2, "{docs:?}");
        assert_eq!(docs.first(), Some(&serde_json::json!({"a": 1})));
        assert_eq!(docs.last(), Some(&serde_json::json!(["x"])));
    }

    #[test]
    fn decimal_integers_are_read_without_serde_saphyr() {
        assert_eq!(decimal_integer("0"), Some(Number::from(0u64)));
        assert_eq!(decimal_integer("8080"), Some(Number::from(8080u64)));
        assert_eq!(decimal_integer("-3"), Some(Number::from(-3i64)));
        assert_eq!(decimal_integer("007"), None);
        assert_eq!(decimal_integer("-0"), Some(Number::from(0i64)));
        assert_eq!(decimal_integer("1.5"), None);
        assert_eq!(decimal_integer("99999999999999999999"), None);
        assert_eq!(decimal_integer(""), None);
        assert_eq!(decimal_integer("-"), None);
    }

    #[test]
    fn words_and_numbers_may_not_be_strings() {
        for text in [
            "", "~", "NULL", "Yes", "off", "N", "1", "-1", "+.5", ".inf", "0x1F",
        ] {
            assert!(may_not_be_string(text), "{text:?}");
        }
        for text in ["argocd", "--port", "v3.4.4", "-", "yesterday", "/bin/sh"] {
            assert!(!may_not_be_string(text), "{text:?}");
        }
    }
}
