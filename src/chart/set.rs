//! `--set` / `--set-string` expressions, in Helm's syntax:
//!
//! - `a=b,c=d`: several assignments, separated by commas;
//! - `outer.inner=x`: dotted paths create nested mappings;
//! - `a\.b=x`: a backslash makes the next character literal (`\.`, `\,`,
//!   `\=`, `\[`, `\\`), in keys and values;
//! - `list[0]=x`, `list[1].name=y`, `m[0][1]=z`: list indexes (missing
//!   elements are filled with `null`; at most index 65536);
//! - `a={x,y}`: a list; `a={}` an empty list;
//! - `a=` sets the empty string, `a=null` sets `null` (deleting a default);
//! - values are typed like Helm: `true`/`false` (any case) are booleans,
//!   `null` (any case) is null, `0` and integers not starting with `0` are
//!   64-bit integers, anything else (floats included) is a string;
//!   `--set-string` keeps every value a string.

use serde_json::{Map, Value};

use super::ChartError;

const MAX_INDEX: usize = 65536;

/// How deeply a `--set` path may nest: the same limit as a values file's
/// (serde-saphyr's default budget), so no expression can exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    expr: &'a str,
    chars: Vec<char>,
    pos: usize,
    force_string: bool,
    depth: usize,
}

/// Applies `expr` onto `root`.
pub(crate) fn apply(
    expr: &str,
    force_string: bool,
    root: &mut Map<String, Value>,
) -> Result<(), ChartError> {
    let mut p = Parser {
        expr,
        chars: expr.chars().collect(),
        pos: 0,
        force_string,
        depth: 0,
    };
    if p.chars.is_empty() {
        return Err(p.err("empty expression; write KEY=VALUE"));
    }
    loop {
        p.depth = 0;
        p.assign_in_map(root)?;
        match p.next() {
            None => return Ok(()),
            Some(',') => {
                if p.peek().is_none() {
                    return Ok(());
                }
            }
            Some(c) => return Err(p.err(&format!("unexpected {c:?} after a value"))),
        }
    }
}

/// What ended a key.
enum KeyEnd {
    Assign,
    Dot,
    Index,
}

impl Parser<'_> {
    fn err(&self, reason: &str) -> ChartError {
        // a hostile expression can be megabytes long: name its start only
        const SHOWN: usize = 80;
        let expr = if self.chars.len() > SHOWN {
            format!(
                "{}… ({} characters)",
                self.chars[..SHOWN].iter().collect::<String>(),
                self.chars.len()
            )
        } else {
            self.expr.to_string()
        };
        ChartError::Set {
            expr,
            reason: reason.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Reads a key up to `=`, `.` or `[` (consumed).
    fn key(&mut self) -> Result<(String, KeyEnd), ChartError> {
        let mut key = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(self.err(&format!("key {key:?} has no value; write {key}=VALUE")));
                }
                Some('\\') => match self.next() {
                    Some(c) => key.push(c),
                    None => return Err(self.err("a trailing backslash escapes nothing")),
                },
                Some('=') => return self.nonempty(key, KeyEnd::Assign),
                Some('.') => return self.nonempty(key, KeyEnd::Dot),
                Some('[') => return self.nonempty(key, KeyEnd::Index),
                Some(',') => {
                    return Err(self.err(&format!("key {key:?} has no value; write {key}=VALUE")));
                }
                Some(c) => key.push(c),
            }
        }
    }

    fn nonempty(&self, key: String, end: KeyEnd) -> Result<(String, KeyEnd), ChartError> {
        if key.is_empty() {
            return Err(self.err("a key is empty; write KEY=VALUE with a non-empty key"));
        }
        Ok((key, end))
    }

    /// Reads the digits of `[N]` (the `[` is consumed already).
    fn index(&mut self) -> Result<usize, ChartError> {
        let mut digits = String::new();
        loop {
            match self.next() {
                Some(']') => break,
                Some(c) if c.is_ascii_digit() => digits.push(c),
                Some(c) => {
                    return Err(self.err(&format!(
                        "list index must be a non-negative integer, found {c:?}"
                    )));
                }
                None => return Err(self.err("unterminated list index; write name[N]=VALUE")),
            }
        }
        let idx: usize = digits
            .parse()
            .map_err(|_| self.err("empty or invalid list index; write name[N]=VALUE"))?;
        if idx > MAX_INDEX {
            return Err(self.err(&format!(
                "list index {idx} is larger than the maximum {MAX_INDEX}"
            )));
        }
        Ok(idx)
    }

    /// Parses one `key...=value` relative to `map`.
    /// One level deeper, or an error past [`MAX_DEPTH`].
    fn descend(&mut self) -> Result<(), ChartError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(&format!(
                "nested more than {MAX_DEPTH} levels deep (the limit values files have too)"
            )));
        }
        Ok(())
    }

    fn assign_in_map(&mut self, map: &mut Map<String, Value>) -> Result<(), ChartError> {
        self.descend()?;
        let (key, end) = self.key()?;
        match end {
            KeyEnd::Assign => {
                let v = self.value()?;
                map.insert(key, v);
            }
            KeyEnd::Dot => {
                let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    self.assign_in_map(inner)?;
                }
            }
            KeyEnd::Index => {
                let idx = self.index()?;
                let slot = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(list) = slot {
                    self.assign_in_list(list, idx)?;
                }
            }
        }
        Ok(())
    }

    /// After `name[idx]`: `=value`, `.rest`, or `[j]...`.
    fn assign_in_list(&mut self, list: &mut Vec<Value>, idx: usize) -> Result<(), ChartError> {
        self.descend()?;
        if list.len() <= idx {
            list.resize(idx + 1, Value::Null);
        }
        match self.next() {
            Some('=') => {
                list[idx] = self.value()?;
            }
            Some('.') => {
                if !list[idx].is_object() {
                    list[idx] = Value::Object(Map::new());
                }
                if let Value::Object(inner) = &mut list[idx] {
                    self.assign_in_map(inner)?;
                }
            }
            Some('[') => {
                let j = self.index()?;
                if !list[idx].is_array() {
                    list[idx] = Value::Array(Vec::new());
                }
                if let Value::Array(inner) = &mut list[idx] {
                    self.assign_in_list(inner, j)?;
                }
            }
            Some(c) => {
                return Err(self.err(&format!(
                    "unexpected {c:?} after a list index; expected `=`, `.` or `[`"
                )));
            }
            None => return Err(self.err("a list index has no value; write name[N]=VALUE")),
        }
        Ok(())
    }

    /// Reads a value: `{a,b}` or a scalar up to an unescaped `,`.
    fn value(&mut self) -> Result<Value, ChartError> {
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut items = Vec::new();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            loop {
                let (raw, end) = self.scalar(&[',', '}']);
                items.push(self.typed(raw));
                match end {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return Err(self.err("unterminated list; write KEY={a,b}")),
                }
            }
            return Ok(Value::Array(items));
        }
        let (raw, end) = self.scalar(&[',']);
        if end == Some(',') {
            self.pos -= 1; // leave the comma for the caller
        }
        Ok(self.typed(raw))
    }

    /// Reads characters up to one of `stops` (consumed and returned) or the end.
    fn scalar(&mut self, stops: &[char]) -> (String, Option<char>) {
        let mut out = String::new();
        while let Some(c) = self.next() {
            if c == '\\' {
                match self.next() {
                    Some(n) => out.push(n),
                    None => out.push('\\'),
                }
            } else if stops.contains(&c) {
                return (out, Some(c));
            } else {
                out.push(c);
            }
        }
        (out, None)
    }

    fn typed(&self, raw: String) -> Value {
        if self.force_string {
            return Value::String(raw);
        }
        typed_value(raw)
    }
}

/// Helm's type inference for `--set` values.
pub(crate) fn typed_value(raw: String) -> Value {
    if raw.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if raw.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if raw.eq_ignore_ascii_case("null") {
        return Value::Null;
    }
    if raw == "0" {
        return Value::from(0i64);
    }
    if !raw.starts_with('0')
        && let Ok(i) = raw.parse::<i64>()
    {
        return Value::from(i);
    }
    Value::String(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_with_the_values_file_limit() {
        let mut root = Map::new();
        let deep = format!("{}=1", vec!["a"; 20_000].join("."));
        let err = apply(&deep, false, &mut root).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 levels"), "{err}");
        assert!(err.len() < 300, "the message names the start only: {err}");
        let lists = format!("a{}=1", "[0]".repeat(20_000));
        let err = apply(&lists, false, &mut root).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 levels"), "{err}");
        // 64 levels are fine, and each assignment of a list has its own budget
        let ok = format!("{}=1", vec!["b"; 64].join("."));
        apply(&format!("{ok},{ok}"), false, &mut root).unwrap();
    }
}
