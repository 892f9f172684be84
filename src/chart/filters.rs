//! The filters and functions chart templates get on top of Tera's built-ins.
//! Each one is documented, with an example, in `docs/chart.md`.

use base64::Engine as _;
use sha2::Digest as _;
use tera::{Error, Kwargs, State, TeraResult, Value};

/// Registers every chart filter and function on `tera`.
pub(crate) fn register(tera: &mut tera::Tera) {
    tera.register_filter("to_yaml", to_yaml);
    tera.register_filter("to_json", to_json);
    tera.register_filter("from_yaml", from_yaml);
    tera.register_filter("from_json", from_json);
    tera.register_filter("indent", indent);
    tera.register_filter("nindent", nindent);
    tera.register_filter("b64encode", b64encode);
    tera.register_filter("b64decode", b64decode);
    tera.register_filter("sha256", sha256);
    tera.register_filter("quote", quote);
    tera.register_filter("squote", squote);
    tera.register_filter("trunc", trunc);
    tera.register_filter("trim_suffix", trim_suffix);
    tera.register_filter("trim_prefix", trim_prefix);
    tera.register_filter("label_safe", label_safe);
    tera.register_filter("default", default);
    tera.register_filter("required", required);
    tera.register_filter("merge", merge);
    tera.register_filter("omit", omit);
    tera.register_filter("compact", compact);
    tera.register_test("printable", printable);
    tera.register_function("fail", fail);
    tera.register_function("required", required_fn);
    tera.register_function("semver_compare", semver_compare);
}

/// The text of a value as `{{ }}` would print it (strings unquoted).
fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(format!("{v}")),
    }
}

fn to_json_value(v: &Value) -> TeraResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::message(format!("cannot convert value: {e}")))
}

/// Helm's `toYaml`: the same bytes (see [`super::helm_yaml`]), no trailing
/// newline.
fn to_yaml(v: Value, _: Kwargs, _: &State) -> TeraResult<String> {
    super::helm_yaml::to_helm_yaml(&v).map_err(|e| Error::message(e.to_string()))
}

fn to_json(v: Value, _: Kwargs, _: &State) -> TeraResult<String> {
    let j = to_json_value(&v)?;
    serde_json::to_string(&j).map_err(|e| Error::message(format!("to_json: {e}")))
}

fn from_yaml(v: &str, _: Kwargs, _: &State) -> TeraResult<Value> {
    let mut j: serde_json::Value =
        serde_saphyr::from_str_with_options(v, super::yaml_read::rendered_options())
            .map_err(|e| Error::message(format!("from_yaml: invalid YAML: {e}")))?;
    super::yaml_read::whole_floats_to_integers(&mut j);
    Ok(Value::from_serializable(&j))
}

fn from_json(v: &str, _: Kwargs, _: &State) -> TeraResult<Value> {
    let j: serde_json::Value = serde_json::from_str(v)
        .map_err(|e| Error::message(format!("from_json: invalid JSON: {e}")))?;
    Ok(Value::from_serializable(&j))
}

fn width(kwargs: &Kwargs, filter: &str) -> TeraResult<usize> {
    let w = kwargs
        .get::<usize>("width")?
        .ok_or_else(|| Error::message(format!("{filter} needs `width`, e.g. {filter}(width=4)")))?;
    Ok(w.min(1000))
}

fn pad_lines(s: &str, w: usize) -> String {
    let mut out = String::new();
    push_padded(&mut out, s, w);
    out
}

/// Appends `s` to `out` with `w` spaces before every line (Helm's `indent`).
fn push_padded(out: &mut String, s: &str, w: usize) {
    out.reserve(s.len() + w * (1 + s.bytes().filter(|b| *b == b'\n').count()));
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.extend(std::iter::repeat_n(' ', w));
        out.push_str(line);
    }
}

fn indent(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let w = width(&kwargs, "indent")?;
    Ok(pad_lines(&text(&v), w))
}

fn nindent(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let w = width(&kwargs, "nindent")?;
    let mut out = String::from("\n");
    push_padded(&mut out, &text(&v), w);
    Ok(out)
}

fn b64encode(v: Value, _: Kwargs, _: &State) -> String {
    base64::engine::general_purpose::STANDARD.encode(text(&v).as_bytes())
}

fn b64decode(v: &str, _: Kwargs, _: &State) -> TeraResult<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| Error::message(format!("b64decode: not base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::message("b64decode: the decoded bytes are not UTF-8"))
}

fn sha256(v: Value, _: Kwargs, _: &State) -> String {
    hex::encode(sha2::Sha256::digest(text(&v).as_bytes()))
}

fn quote(v: Value, _: Kwargs, _: &State) -> String {
    if v.is_undefined() || v.is_none() {
        return String::new();
    }
    let s = text(&v);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn squote(v: Value, _: Kwargs, _: &State) -> String {
    if v.is_undefined() || v.is_none() {
        return String::new();
    }
    format!("'{}'", text(&v).replace('\'', "''"))
}

fn trunc(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let n = kwargs
        .get::<i64>("length")?
        .ok_or_else(|| Error::message("trunc needs `length`, e.g. trunc(length=63)"))?;
    let s = text(&v);
    let count = s.chars().count();
    let n_abs = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
    if n >= 0 {
        Ok(s.chars().take(n_abs).collect())
    } else if n_abs >= count {
        Ok(s.into_owned())
    } else {
        Ok(s.chars().skip(count - n_abs).collect())
    }
}

fn trim_suffix(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let suffix = kwargs.must_get::<&str>("suffix")?;
    let s = text(&v);
    Ok(s.strip_suffix(suffix).unwrap_or(&s).to_string())
}

fn trim_prefix(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let prefix = kwargs.must_get::<&str>("prefix")?;
    let s = text(&v);
    Ok(s.strip_prefix(prefix).unwrap_or(&s).to_string())
}

/// The text with every character a label value may not hold (anything outside
/// `[-A-Za-z0-9_.]`) replaced by `-`: `"v1~x@sha256:ab"` → `"v1-x-sha256-ab"`.
fn label_safe(v: Value, _: Kwargs, _: &State) -> TeraResult<String> {
    Ok(text(&v)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect())
}

/// Whether the text may stand in a YAML block scalar: only YAML's printable
/// characters (a tab and line feeds included). Anything else has to be
/// escaped in a double-quoted string, as go-yaml does; so do the characters
/// YAML 1.1 (go-yaml v2) reads as line breaks besides `\n`: a carriage
/// return, U+0085, U+2028 and U+2029.
fn printable(v: &str, _: Kwargs, _: &State) -> bool {
    v.chars().all(|c| {
        matches!(c, '\t' | '\n')
            || ('\u{20}'..='\u{7e}').contains(&c)
            || ('\u{a0}'..='\u{d7ff}').contains(&c) && !matches!(c, '\u{2028}' | '\u{2029}')
            || ('\u{e000}'..='\u{fffd}').contains(&c) && c != '\u{feff}'
            || c >= '\u{10000}'
    })
}

/// Helm's `default`: the fallback when the value is undefined, null, false,
/// 0, an empty string, an empty list or an empty mapping.
fn default(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let fallback = kwargs.must_get::<Value>("value")?;
    if v.is_truthy() { Ok(v) } else { Ok(fallback) }
}

/// Helm's `required`: fails with `message` when the value is undefined, null
/// or an empty string.
fn required(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let missing = v.is_undefined() || v.is_none() || v.as_str().is_some_and(str::is_empty);
    if missing {
        let message = kwargs
            .get::<&str>("message")?
            .unwrap_or("a required value is missing");
        return Err(Error::message(message));
    }
    Ok(v)
}

/// Function form of `required`: `required(value=x, message="...")`.
fn required_fn(kwargs: Kwargs, state: &State) -> TeraResult<Value> {
    let value = kwargs.get::<Value>("value")?.unwrap_or_else(Value::none);
    required(value, kwargs, state)
}

/// Deep-merges the mapping `with` over the input mapping (keys of `with` win;
/// nested mappings merge; lists and scalars are replaced).
fn merge(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let with = kwargs.must_get::<Value>("with")?;
    let mut base = if v.is_undefined() || v.is_none() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        to_json_value(&v)?
    };
    let over = if with.is_undefined() || with.is_none() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        to_json_value(&with)?
    };
    if !base.is_object() || !over.is_object() {
        return Err(Error::message(
            "merge: both the input and `with` must be mappings",
        ));
    }
    super::values::merge_into(&mut base, over);
    Ok(Value::from_serializable(&base))
}

/// Removes the given keys from a mapping: `omit(keys=["a", "b"])`.
fn omit(v: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let keys = kwargs.must_get::<Value>("keys")?;
    let keys: Vec<String> = match keys.as_array() {
        Some(a) => a.iter().map(|k| text(k).into_owned()).collect(),
        None => vec![text(&keys).into_owned()],
    };
    let mut j = to_json_value(&v)?;
    match &mut j {
        serde_json::Value::Object(m) => {
            for k in &keys {
                m.remove(k);
            }
        }
        serde_json::Value::Null => {}
        _ => return Err(Error::message("omit: the input must be a mapping")),
    }
    Ok(Value::from_serializable(&j))
}

/// Drops empty elements (per `default`'s notion of empty) from a list.
fn compact(v: Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    match v.as_array() {
        Some(a) => Ok(Value::from(
            a.iter()
                .filter(|x| x.is_truthy())
                .cloned()
                .collect::<Vec<Value>>(),
        )),
        None if v.is_undefined() || v.is_none() => Ok(Value::from(Vec::<Value>::new())),
        None => Err(Error::message("compact: the input must be a list")),
    }
}

/// `fail(message="...")`: stops the render with this message.
fn fail(kwargs: Kwargs, _: &State) -> TeraResult<bool> {
    let message = kwargs.must_get::<&str>("message")?;
    Err(Error::message(message))
}

/// `semver_compare(constraint=">=1.25.0-0", version=capabilities.kube_version)`:
/// whether `version` satisfies the constraint (see `chart::semver`).
fn semver_compare(kwargs: Kwargs, _: &State) -> TeraResult<bool> {
    let constraint = kwargs.must_get::<&str>("constraint")?;
    let version = kwargs.must_get::<&str>("version")?;
    super::semver::satisfies(constraint, version)
        .map_err(|e| Error::message(format!("semver_compare: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_lines_indents_every_line() {
        assert_eq!(pad_lines("a\nb", 2), "  a\n  b");
        assert_eq!(pad_lines("a\n\nb", 1), " a\n \n b");
    }
}
