//! Validation of custom resources against their CRD's structural schema
//! (`openAPIV3Schema`): types, `required`, `enum`, `x-kubernetes-int-or-string`,
//! as the real server checks them (`422 Invalid`). Unknown fields are kept
//! (the real server prunes them unless `x-kubernetes-preserve-unknown-fields`).

use serde_json::Value;

/// Collects `(field, message)` causes for `obj` against `schema`
/// (metadata, apiVersion and kind are not checked here).
pub(crate) fn check(obj: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    if let (Some(o), Some(props)) = (obj.as_object(), schema["properties"].as_object()) {
        for (k, v) in o {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = props.get(k) {
                walk(v, s, k, &mut causes);
            }
        }
        required(o, schema, "", &mut causes);
    }
    causes
}

fn required(
    o: &serde_json::Map<String, Value>,
    s: &Value,
    path: &str,
    causes: &mut Vec<(String, String)>,
) {
    if let Some(req) = s["required"].as_array() {
        for r in req.iter().filter_map(Value::as_str) {
            if matches!(r, "apiVersion" | "kind" | "metadata") && path.is_empty() {
                continue;
            }
            if o.get(r).is_none_or(Value::is_null) {
                let field = if path.is_empty() {
                    r.to_owned()
                } else {
                    format!("{path}.{r}")
                };
                causes.push((field, "Required value".into()));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(v: &Value, s: &Value, path: &str, causes: &mut Vec<(String, String)>) {
    if v.is_null() {
        return;
    }
    let got = type_name(v);
    if s["x-kubernetes-int-or-string"] == true {
        if got != "integer" && got != "string" {
            causes.push((
                path.into(),
                format!("Invalid value: \"{got}\": {path} in body must be of type integer or string: \"{got}\""),
            ));
        }
        return;
    }
    if let Some(want) = s["type"].as_str() {
        let ok = match want {
            "number" => got == "number" || got == "integer",
            other => got == other,
        };
        if !ok {
            causes.push((
                path.into(),
                format!(
                    "Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""
                ),
            ));
            return;
        }
    }
    if let Some(options) = s["enum"].as_array()
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        causes.push((
            path.into(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(o) => {
            let props = s["properties"].as_object();
            for (k, child) in o {
                let sub = props.and_then(|p| p.get(k)).or_else(|| {
                    s["additionalProperties"]
                        .as_object()
                        .map(|_| &s["additionalProperties"])
                });
                if let Some(sub) = sub {
                    walk(child, sub, &format!("{path}.{k}"), causes);
                }
            }
            required(o, s, path, causes);
        }
        Value::Array(items) if s["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &s["items"], &format!("{path}[{i}]"), causes);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_required_enum_and_int_or_string() {
        let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"},
            "size": {"type": "integer"},
            "ratio": {"type": "number"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "port": {"x-kubernetes-int-or-string": true},
            "tags": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        }}}});
        let good = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"name": "n", "size": 3, "ratio": 1, "mode": "a", "port": "http",
                     "tags": ["t"], "labels": {"a": "b"}, "unknown": 1}});
        assert!(check(&good, &schema).is_empty());
        let bad = json!({"spec": {"size": "3", "mode": "c", "port": true, "tags": [1], "labels": {"a": 2}}});
        let fields: Vec<String> = check(&bad, &schema).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.labels.a",
                "spec.mode",
                "spec.port",
                "spec.size",
                "spec.tags[0]",
                "spec.name"
            ]
        );
    }
}
