//! Type checks of built-in objects against the Kubernetes API types
//! (k8s-openapi): a string where the API wants a number, a number where it
//! wants a string, a list where it wants a map, invalid base64 in a Secret —
//! all rejected with `400 BadRequest` as the real server's decoder does.
//! Unknown fields are not checked (the real server drops them with a warning
//! unless asked for strict validation).

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, networking, policy, rbac, scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::registry::ResourceType;
use super::util::ApiError;

/// Keys whose values are maps of resource quantities (or a quantity):
/// quantities may be written as JSON numbers, which the API accepts.
const QUANTITY_KEYS: [&str; 12] = [
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "overhead",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

fn numbers_to_strings(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if QUANTITY_KEYS.contains(&k.as_str())
                    && let Value::Object(q) = child
                {
                    for qv in q.values_mut() {
                        if let Value::Number(n) = qv {
                            *qv = Value::String(n.to_string());
                        }
                    }
                }
                if k == "sizeLimit"
                    && let Value::Number(n) = child
                {
                    *child = Value::String(n.to_string());
                    continue;
                }
                numbers_to_strings(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(numbers_to_strings),
        _ => {}
    }
}

/// A value of the wrong type: where, and what the API type wants there
/// (serde's wording, e.g. `i32`, `a string`).
#[derive(Debug)]
struct WrongType {
    path: String,
    want: String,
    /// serde's whole message, when it is not an `invalid type`.
    message: String,
}

/// A field of the object that its API type does not declare.
#[derive(Debug)]
struct UnknownField(String);

fn check<T: DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Option<UnknownField>, WrongType> {
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(t) => {
            let back = serde_json::to_value(&t).unwrap_or(Value::Null);
            let unknown = v.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, x)| !x.is_null() && back.get(k.as_str()).is_none())
                    .map(|(k, _)| UnknownField(k.clone()))
            });
            Ok(unknown)
        }
        // Go decodes a missing field as its zero value; whether it is
        // required is validation's business, not the decoder's.
        Err(e) if e.inner().to_string().starts_with("missing field") => Ok(None),
        Err(e) => {
            let message = e.inner().to_string();
            let want = message
                .split_once(", expected ")
                .map(|(_, w)| w.to_owned())
                .unwrap_or_default();
            Err(WrongType {
                path: e.path().to_string(),
                want,
                message,
            })
        }
    }
}

/// The value at a dotted serde path.
fn value_at<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(obj, |cur, seg| {
            match seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(i) => i.parse::<usize>().map_or(&Value::Null, |i| &cur[i]),
                None => &cur[seg],
            }
        })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

fn numeric(want: &str) -> bool {
    matches!(
        want,
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "f32" | "f64"
    )
}

const MAP_FIELDS: [&str; 6] = [
    "data",
    "binaryData",
    "stringData",
    "labels",
    "annotations",
    "matchLabels",
];

/// The POST/PUT decoder's message (Go's `encoding/json` wording).
fn decode_message(rt: &ResourceType, obj: &Value, e: &WrongType) -> String {
    let segs: Vec<&str> = e.path.split('.').collect();
    let got = json_type(value_at(obj, &e.path));
    let go_type = match e.want.as_str() {
        "i32" => "int32",
        "i64" => "int64",
        "f64" => "float64",
        "a string" => "string",
        "a boolean" => "bool",
        other => other,
    };
    // A value in a string map is reported at the map field.
    let field: Vec<&str> = match segs.len() {
        n if n >= 2 && MAP_FIELDS.contains(&segs[n - 2]) => segs[..n - 1].to_vec(),
        _ => segs.clone(),
    };
    let go_struct = match field.first() {
        Some(first) if field.len() >= 2 => {
            let mut c = first.chars();
            let cap: String = c
                .next()
                .map(|f| f.to_ascii_uppercase())
                .into_iter()
                .chain(c)
                .collect();
            format!("{}{cap}", rt.kind)
        }
        _ => rt.kind.clone(),
    };
    if e.want.is_empty() {
        return e.message.clone();
    }
    format!(
        "json: cannot unmarshal {got} into Go struct field {go_struct}.{} of type {go_type}",
        field.join(".")
    )
}

/// The apply path's message for a value of the wrong type
/// (structured-merge-diff's wording).
fn typed_patch_message(obj: &Value, e: &WrongType) -> String {
    let actual = value_at(obj, &e.path);
    let detail = if numeric(&e.want) {
        format!("expected numeric (int or float), got {}", json_type(actual))
    } else if e.want == "a string" {
        format!("expected string, got &value.valueUnstructured{{Value:{actual}}}")
    } else if e.want == "a boolean" {
        format!("expected boolean, got &value.valueUnstructured{{Value:{actual}}}")
    } else {
        e.message.clone()
    };
    format!(".{}: {detail}", e.path)
}

/// Checks an apply configuration the way the real server builds its typed
/// patch object: a wrong type or an undeclared top-level field is
/// `500` `failed to create typed patch object (ns/name; group/version, Kind=K): ...`.
pub(crate) fn check_apply_config(
    rt: &ResourceType,
    ns: &str,
    name: &str,
    config: &Value,
) -> Result<(), ApiError> {
    if rt.custom {
        return Ok(());
    }
    let detail = match typed_check(rt, config) {
        Ok(None) => return Ok(()),
        Ok(Some(UnknownField(f))) => format!(".{f}: field not declared in schema"),
        Err(e) => typed_patch_message(config, &e),
    };
    let who = if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    };
    Err(ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({who}; {}/{}, Kind={}): {detail}",
            rt.group, rt.version, rt.kind
        ),
    ))
}

/// Checks `obj` (a complete object of kind `rt`) against its API type.
pub(crate) fn check_types(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if rt.custom {
        return Ok(());
    }
    typed_check(rt, obj).map(|_| ()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            rt.kind,
            rt.version,
            rt.kind,
            decode_message(rt, obj, &e)
        ))
    })
}

fn typed_check(rt: &ResourceType, obj: &Value) -> Result<Option<UnknownField>, WrongType> {
    let mut v = obj.clone();
    numbers_to_strings(&mut v);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => check::<core::v1::Namespace>(&v),
        ("", "ConfigMap") => check::<core::v1::ConfigMap>(&v),
        ("", "Secret") => check::<core::v1::Secret>(&v),
        ("", "Service") => check::<core::v1::Service>(&v),
        ("", "ServiceAccount") => check::<core::v1::ServiceAccount>(&v),
        ("", "Pod") => check::<core::v1::Pod>(&v),
        ("", "PersistentVolumeClaim") => check::<core::v1::PersistentVolumeClaim>(&v),
        ("", "PersistentVolume") => check::<core::v1::PersistentVolume>(&v),
        ("", "Event") => check::<core::v1::Event>(&v),
        ("", "Endpoints") => check::<core::v1::Endpoints>(&v),
        ("", "Node") => check::<core::v1::Node>(&v),
        ("", "ResourceQuota") => check::<core::v1::ResourceQuota>(&v),
        ("", "LimitRange") => check::<core::v1::LimitRange>(&v),
        ("apps", "Deployment") => check::<apps::v1::Deployment>(&v),
        ("apps", "StatefulSet") => check::<apps::v1::StatefulSet>(&v),
        ("apps", "DaemonSet") => check::<apps::v1::DaemonSet>(&v),
        ("apps", "ReplicaSet") => check::<apps::v1::ReplicaSet>(&v),
        ("apps", "ControllerRevision") => check::<apps::v1::ControllerRevision>(&v),
        ("batch", "Job") => check::<batch::v1::Job>(&v),
        ("batch", "CronJob") => check::<batch::v1::CronJob>(&v),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            check::<autoscaling::v2::HorizontalPodAutoscaler>(&v)
        }
        ("rbac.authorization.k8s.io", "Role") => check::<rbac::v1::Role>(&v),
        ("rbac.authorization.k8s.io", "RoleBinding") => check::<rbac::v1::RoleBinding>(&v),
        ("rbac.authorization.k8s.io", "ClusterRole") => check::<rbac::v1::ClusterRole>(&v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            check::<rbac::v1::ClusterRoleBinding>(&v)
        }
        ("networking.k8s.io", "NetworkPolicy") => check::<networking::v1::NetworkPolicy>(&v),
        ("networking.k8s.io", "Ingress") => check::<networking::v1::Ingress>(&v),
        ("networking.k8s.io", "IngressClass") => check::<networking::v1::IngressClass>(&v),
        ("policy", "PodDisruptionBudget") => check::<policy::v1::PodDisruptionBudget>(&v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            check::<apiextensions::v1::CustomResourceDefinition>(&v)
        }
        ("storage.k8s.io", "StorageClass") => check::<storage::v1::StorageClass>(&v),
        ("coordination.k8s.io", "Lease") => check::<coordination::v1::Lease>(&v),
        ("scheduling.k8s.io", "PriorityClass") => check::<scheduling::v1::PriorityClass>(&v),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::builtins;
    use serde_json::json;

    fn rt(kind: &str) -> ResourceType {
        builtins().into_iter().find(|t| t.kind == kind).unwrap()
    }

    #[test]
    fn wrong_types_are_rejected_and_numeric_quantities_accepted() {
        let good = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}}}});
        assert!(check_types(&rt("Deployment"), &good).is_ok());
        let mut bad = good.clone();
        bad["spec"]["replicas"] = json!("2");
        let e = check_types(&rt("Deployment"), &bad).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("cannot be handled as a Deployment"),
            "{}",
            e.message
        );
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "not base64!"}});
        assert!(check_types(&rt("Secret"), &secret).is_err());
        // Fields the Go decoder would zero-fill are not a type error.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"containerStatuses": [{"name": "c", "ready": true}]}});
        assert!(check_types(&rt("Pod"), &pod).is_ok());
    }
}
