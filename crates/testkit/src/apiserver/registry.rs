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
                    "configmaps"
                        | "secrets"
                        | "serviceaccounts"
                        | "events"
                        | "namespaces"
                        | "services"
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
        // Served as plain storage so that discovery lists what a real
        // v1.36 server lists; nothing acts on them.
        ("", "v1", "bindings", "binding", "Binding", true, false),
        (
            "",
            "v1",
            "componentstatuses",
            "componentstatus",
            "ComponentStatus",
            false,
            false,
        ),
        (
            "",
            "v1",
            "podtemplates",
            "podtemplate",
            "PodTemplate",
            true,
            false,
        ),
        (
            "",
            "v1",
            "replicationcontrollers",
            "replicationcontroller",
            "ReplicationController",
            true,
            true,
        ),
        (
            "apiregistration.k8s.io",
            "v1",
            "apiservices",
            "apiservice",
            "APIService",
            false,
            true,
        ),
        (
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            true,
            false,
        ),
        (
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "tokenreview",
            "TokenReview",
            false,
            false,
        ),
        (
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "subjectaccessreview",
            "SubjectAccessReview",
            false,
            false,
        ),
        (
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            "certificatesigningrequest",
            "CertificateSigningRequest",
            false,
            true,
        ),
        (
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            "MutatingWebhookConfiguration",
            false,
            false,
        ),
        (
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            "ValidatingWebhookConfiguration",
            false,
            false,
        ),
        (
            "node.k8s.io",
            "v1",
            "runtimeclasses",
            "runtimeclass",
            "RuntimeClass",
            false,
            false,
        ),
        (
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
            false,
        ),
        (
            "resource.k8s.io",
            "v1",
            "deviceclasses",
            "deviceclass",
            "DeviceClass",
            false,
            false,
        ),
        (
            "resource.k8s.io",
            "v1",
            "resourceclaims",
            "resourceclaim",
            "ResourceClaim",
            true,
            true,
        ),
        (
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "flowschemas",
            "flowschema",
            "FlowSchema",
            false,
            true,
        ),
        (
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "prioritylevelconfigurations",
            "prioritylevelconfiguration",
            "PriorityLevelConfiguration",
            false,
            true,
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

/// Short names of built-in resources, as a v1.36 server lists them.
fn short_names(rt: &ResourceType) -> &'static [&'static str] {
    if rt.custom {
        return &[];
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "configmaps") => &["cm"],
        ("", "namespaces") => &["ns"],
        ("", "services") => &["svc"],
        ("", "serviceaccounts") => &["sa"],
        ("", "pods") => &["po"],
        ("", "persistentvolumeclaims") => &["pvc"],
        ("", "persistentvolumes") => &["pv"],
        ("", "events") => &["ev"],
        ("", "endpoints") => &["ep"],
        ("", "nodes") => &["no"],
        ("", "resourcequotas") => &["quota"],
        ("", "limitranges") => &["limits"],
        ("", "componentstatuses") => &["cs"],
        ("", "replicationcontrollers") => &["rc"],
        ("apps", "deployments") => &["deploy"],
        ("apps", "daemonsets") => &["ds"],
        ("apps", "replicasets") => &["rs"],
        ("apps", "statefulsets") => &["sts"],
        ("batch", "cronjobs") => &["cj"],
        ("autoscaling", "horizontalpodautoscalers") => &["hpa"],
        ("networking.k8s.io", "networkpolicies") => &["netpol"],
        ("networking.k8s.io", "ingresses") => &["ing"],
        ("policy", "poddisruptionbudgets") => &["pdb"],
        ("apiextensions.k8s.io", "customresourcedefinitions") => &["crd", "crds"],
        ("storage.k8s.io", "storageclasses") => &["sc"],
        ("scheduling.k8s.io", "priorityclasses") => &["pc"],
        ("events.k8s.io", "events") => &["ev"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["csr"],
        _ => &[],
    }
}

/// Whether the resource is in the `all` category.
fn in_all(rt: &ResourceType) -> bool {
    !rt.custom
        && matches!(
            (rt.group.as_str(), rt.plural.as_str()),
            ("", "services" | "pods" | "replicationcontrollers")
                | (
                    "apps",
                    "deployments" | "daemonsets" | "replicasets" | "statefulsets"
                )
                | ("batch", "jobs" | "cronjobs")
                | ("autoscaling", "horizontalpodautoscalers")
        )
}

/// The storage version hashes a v1.36 server reports (apps/v1).
fn storage_version_hash(rt: &ResourceType) -> &'static str {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "controllerrevisions") => "85nkx63pcBU=",
        ("apps", "daemonsets") => "dd7pWHUlMKQ=",
        ("apps", "deployments") => "8aSe+NMegvE=",
        ("apps", "replicasets") => "P1RzHs8/mWQ=",
        ("apps", "statefulsets") => "H+vl74LkKdo=",
        _ => "",
    }
}

fn verbs(rt: &ResourceType) -> Vec<&'static str> {
    if !rt.custom && rt.group.is_empty() && rt.plural == "namespaces" {
        return VERBS
            .iter()
            .copied()
            .filter(|v| *v != "deletecollection")
            .collect();
    }
    VERBS.to_vec()
}

/// A subresource: name, response kind (group, version, kind; empty group and
/// version for the resource's own), verbs.
type Subresource = (&'static str, (String, String, String), Vec<&'static str>);

/// Subresources in name order.
fn subresources(rt: &ResourceType) -> Vec<Subresource> {
    let own = (String::new(), String::new(), rt.kind.clone());
    let gpu = vec!["get", "patch", "update"];
    let mut out: Vec<Subresource> = Vec::new();
    if !rt.custom {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => out.push(("finalize", own.clone(), vec!["update"])),
            ("", "services") => out.push((
                "proxy",
                (String::new(), String::new(), "ServiceProxyOptions".into()),
                vec!["create", "delete", "get", "patch", "update"],
            )),
            ("apps", "deployments" | "replicasets" | "statefulsets") => out.push((
                "scale",
                ("autoscaling".into(), "v1".into(), "Scale".into()),
                gpu.clone(),
            )),
            _ => {}
        }
    }
    if rt.status {
        out.push(("status", own, gpu));
    }
    out
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": verbs(rt),
        "storageVersionHash": storage_version_hash(rt),
    });
    if !short_names(rt).is_empty() {
        main["shortNames"] = json!(short_names(rt));
    }
    if in_all(rt) {
        main["categories"] = json!(["all"]);
    }
    let mut out = vec![main];
    for (name, (g, v, k), verbs) in subresources(rt) {
        let mut e = json!({
            "name": format!("{}/{name}", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": k,
            "verbs": verbs,
        });
        if !g.is_empty() {
            e["group"] = json!(g);
            e["version"] = json!(v);
        }
        out.push(e);
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
    let mut served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    served.sort_by(|a, b| a.plural.cmp(&b.plural));
    let resources: Vec<Value> = served.into_iter().flat_map(resource_entries).collect();
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
    // Built-in groups in the real server's priority order, then the others.
    out.sort_by_key(|(g, _)| {
        GROUP_ORDER
            .iter()
            .position(|o| o == g)
            .unwrap_or(GROUP_ORDER.len())
    });
    out
}

/// The order in which a v1.36 server lists its built-in groups.
const GROUP_ORDER: [&str; 20] = [
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "resource.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

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
                    // The resource's own kind has an empty group and version.
                    let gvk = json!({"group": "", "version": "", "kind": t.kind});
                    let subs: Vec<Value> = subresources(t)
                        .into_iter()
                        .map(|(name, (g, v, k), verbs)| {
                            json!({"subresource": name,
                                   "responseKind": {"group": g, "version": v, "kind": k},
                                   "verbs": verbs})
                        })
                        .collect();
                    let mut r = json!({
                        "resource": t.plural,
                        "responseKind": gvk,
                        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": t.singular,
                        "verbs": verbs(t),
                    });
                    if !short_names(t).is_empty() {
                        r["shortNames"] = json!(short_names(t));
                    }
                    if in_all(t) {
                        r["categories"] = json!(["all"]);
                    }
                    if !subs.is_empty() {
                        r["subresources"] = json!(subs);
                    }
                    r
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
