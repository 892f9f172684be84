//! The resource types the server serves: built-in kinds and the custom
//! resources of established CustomResourceDefinitions, plus the discovery
//! documents that describe them.

use serde_json::{Value, json};

/// How the elements of a JSON array are merged and owned by server-side apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// Items identified by these key fields (`x-kubernetes-list-type: map`).
    Map(Vec<&'static str>),
    /// Scalars identified by value (`x-kubernetes-list-type: set`).
    Set,
}

/// One served resource at one group/version.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has a `status` subresource (main writes ignore status).
    pub status: bool,
    /// Served from a CRD (lists are atomic unless declared otherwise).
    pub custom: bool,
    /// The version's `openAPIV3Schema`, for custom resources that have one.
    pub schema: Option<std::sync::Arc<Value>>,
}

impl ResourceType {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key shared by all versions: `deployments.apps`, `configmaps`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether writes bump `metadata.generation`.
    pub fn has_generation(&self) -> bool {
        self.custom
            || !(self.group.is_empty()
                && matches!(
                    self.plural.as_str(),
                    "configmaps" | "secrets" | "serviceaccounts" | "events" | "namespaces"
                ))
    }

    /// The array field `name` at the given path of field names, e.g.
    /// `["spec", "template", "spec", "containers"]`.
    pub fn list_type(&self, path: &[&str], items: &[Value]) -> ListType {
        let name = path.last().copied().unwrap_or("");
        if path.len() == 2 && path[0] == "metadata" {
            return match name {
                "finalizers" => ListType::Set,
                "ownerReferences" => ListType::Map(vec!["uid"]),
                _ => ListType::Atomic,
            };
        }
        if self.custom {
            return ListType::Atomic;
        }
        let keys: Vec<&'static str> = match name {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "env"
            | "imagePullSecrets"
            | "resourceClaims" => vec!["name"],
            "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => {
                vec!["containerPort", "protocol"]
            }
            "ports" if items.iter().any(|i| i.get("port").is_some()) => vec!["port", "protocol"],
            "volumeMounts" => vec!["mountPath"],
            "volumeDevices" => vec!["devicePath"],
            "conditions" => vec!["type"],
            "hostAliases" => vec!["ip"],
            "topologySpreadConstraints" => vec!["topologyKey", "whenUnsatisfiable"],
            "finalizers" => return ListType::Set,
            _ => return ListType::Atomic,
        };
        let usable = items.iter().all(|i| {
            i.as_object()
                .is_some_and(|o| keys.iter().any(|k| o.contains_key(*k)))
        });
        if usable {
            ListType::Map(keys)
        } else {
            ListType::Atomic
        }
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The built-in resource types.
pub(crate) fn builtins() -> Vec<ResourceType> {
    // (group, version, plural, singular, kind, namespaced, status)
    let table: &[(&str, &str, &str, &str, &str, bool, bool)] = &[
        (
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            true,
        ),
        (
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            false,
        ),
        ("", "v1", "secrets", "secret", "Secret", true, false),
        ("", "v1", "services", "service", "Service", true, true),
        (
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            false,
        ),
        ("", "v1", "pods", "pod", "Pod", true, true),
        (
            "",
            "v1",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
            true,
            true,
        ),
        (
            "",
            "v1",
            "persistentvolumes",
            "persistentvolume",
            "PersistentVolume",
            false,
            true,
        ),
        ("", "v1", "events", "event", "Event", true, false),
        ("", "v1", "endpoints", "endpoints", "Endpoints", true, false),
        ("", "v1", "nodes", "node", "Node", false, true),
        (
            "",
            "v1",
            "resourcequotas",
            "resourcequota",
            "ResourceQuota",
            true,
            true,
        ),
        (
            "",
            "v1",
            "limitranges",
            "limitrange",
            "LimitRange",
            true,
            false,
        ),
        (
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            true,
        ),
        (
            "apps",
            "v1",
            "statefulsets",
            "statefulset",
            "StatefulSet",
            true,
            true,
        ),
        (
            "apps",
            "v1",
            "daemonsets",
            "daemonset",
            "DaemonSet",
            true,
            true,
        ),
        (
            "apps",
            "v1",
            "replicasets",
            "replicaset",
            "ReplicaSet",
            true,
            true,
        ),
        (
            "apps",
            "v1",
            "controllerrevisions",
            "controllerrevision",
            "ControllerRevision",
            true,
            false,
        ),
        ("batch", "v1", "jobs", "job", "Job", true, true),
        ("batch", "v1", "cronjobs", "cronjob", "CronJob", true, true),
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            "HorizontalPodAutoscaler",
            true,
            true,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "role",
            "Role",
            true,
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            false,
        ),
        (
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            true,
            false,
        ),
        (
            "networking.k8s.io",
            "v1",
            "ingresses",
            "ingress",
            "Ingress",
            true,
            true,
        ),
        (
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            "ingressclass",
            "IngressClass",
            false,
            false,
        ),
        (
            "policy",
            "v1",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
            true,
        ),
        (
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            true,
        ),
        (
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "storageclass",
            "StorageClass",
            false,
            false,
        ),
        (
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            true,
            false,
        ),
        (
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "priorityclass",
            "PriorityClass",
            false,
            false,
        ),
    ];
    table
        .iter()
        .map(|&(g, v, p, s, k, n, st)| ResourceType {
            group: g.into(),
            version: v.into(),
            plural: p.into(),
            singular: s.into(),
            kind: k.into(),
            namespaced: n,
            status: st,
            custom: false,
            schema: None,
        })
        .collect()
}

/// The resource types a CRD object serves (its served versions), when it is
/// well-formed enough to serve anything.
pub(crate) fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec["names"]["plural"].as_str(),
        spec["names"]["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = spec["names"]["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let Some(versions) = spec["versions"].as_array() else {
        return Vec::new();
    };
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            Some(ResourceType {
                group: group.into(),
                version: v["name"].as_str()?.into(),
                plural: plural.into(),
                singular: singular.clone(),
                kind: kind.into(),
                namespaced,
                status: v["subresources"]["status"].is_object(),
                custom: true,
                schema: v["schema"]["openAPIV3Schema"]
                    .is_object()
                    .then(|| std::sync::Arc::new(v["schema"]["openAPIV3Schema"].clone())),
            })
        })
        .collect()
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut out = vec![json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
        "storageVersionHash": "",
    })];
    if rt.status {
        out.push(json!({
            "name": format!("{}/status", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `APIResourceList` for one group/version.
pub(crate) fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(resource_entries)
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// The groups (not core) and their versions, in first-seen order.
pub(crate) fn groups(types: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) => {
                if !vs.contains(&t.version) {
                    vs.push(t.version.clone());
                }
            }
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    for (_, vs) in &mut out {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, num.parse().unwrap_or(0))
}

/// `APIGroup` for one group.
pub(crate) fn api_group(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `APIGroupList` (legacy discovery at `/apis`).
pub(crate) fn group_list(types: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| {
            let mut v = api_group(g, vs);
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn discovery_group(types: &[ResourceType], name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = types
                .iter()
                .filter(|t| t.group == name && &t.version == v)
                .map(|t| {
                    let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
                    let mut subs = Vec::new();
                    if t.status {
                        subs.push(json!({
                            "subresource": "status",
                            "responseKind": gvk,
                            "verbs": ["get", "patch", "update"],
                        }));
                    }
                    json!({
                        "resource": t.plural,
                        "responseKind": gvk,
                        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": t.singular,
                        "verbs": VERBS,
                        "subresources": subs,
                    })
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": vs})
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`)
/// for `/api` (`core == true`) or `/apis`.
pub(crate) fn aggregated(types: &[ResourceType], core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![discovery_group(types, "", &["v1".to_owned()])]
    } else {
        groups(types)
            .iter()
            .map(|(g, vs)| discovery_group(types, g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}
