//! Ordering a bundle: what each object must wait for.
//!
//! An object waits only where the server needs it to:
//!
//! - a custom resource waits until the CustomResourceDefinition in the bundle
//!   that defines its group and kind is `Established`;
//! - a namespaced object waits until its Namespace, when the bundle holds it,
//!   is `Active`;
//! - an object waits until whatever its `tendril.dev/depends-on` annotation
//!   names is ready;
//! - admission webhooks and APIServices wait until everything else is
//!   applied, so that they cannot intercept the bundle before their backends exist.
//!
//! Everything else is applied at once (bounded by the concurrency): a bundle
//! of CRDs without custom resources is one concurrent pass. The objects
//! something waits for are the *gates*. An object's *wave* is its depth in
//! this graph (0 for objects that wait for nothing); it is shown in reports.

use super::{ApplyError, ObjectRef};
use std::collections::HashMap;

/// One object as the planner sees it.
#[derive(Debug, Clone)]
pub struct Node {
    /// The object (namespace already filled for namespaced kinds).
    pub id: ObjectRef,
    /// Where it came from (for errors).
    pub source: String,
    /// The raw `tendril.dev/depends-on` annotation, if any.
    pub depends_on: Option<String>,
    /// For a CustomResourceDefinition: the (group, kind) it defines.
    pub defines: Option<(String, String)>,
}

/// What an object needs of another one before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The other object has been applied.
    Applied,
    /// The other object is ready (Established, Active, or by its readiness rule).
    Ready,
}

/// The order: per object what it waits for, which objects gate others, and the waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `deps[i]`: the objects object `i` waits for, and for what.
    pub deps: Vec<Vec<(usize, Need)>>,
    /// `gates[i]`: some object waits until object `i` is ready.
    pub gates: Vec<bool>,
    /// Objects by depth in the dependency graph, each wave in input order.
    pub waves: Vec<Vec<usize>>,
}

impl Plan {
    /// The wave (depth) of object `i`.
    pub fn wave_of(&self, i: usize) -> usize {
        self.waves.iter().position(|w| w.contains(&i)).unwrap_or(0)
    }
}

/// Whether Kubernetes serves this API group itself (any other group's
/// kinds are custom resources).
pub(crate) fn is_builtin_group(group: &str) -> bool {
    BUILTIN_GROUPS.contains(&group)
}

/// API groups served by Kubernetes itself; any other group is a custom resource.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiregistration.k8s.io",
    "apiextensions.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "storagemigration.k8s.io",
    "internal.apiserver.k8s.io",
];

/// The kind's place in an install, used to prune in reverse:
///
/// - 0: CustomResourceDefinitions and Namespaces;
/// - 1: other built-in cluster objects and namespaced configuration
///   (ServiceAccounts, Secrets, ConfigMaps, RBAC, Services, ...);
/// - 2: workloads, Ingresses and custom resources;
/// - 3: admission webhooks and APIServices (applied after everything else).
pub fn stage(group: &str, kind: &str) -> usize {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => 0,
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        )
        | ("apiregistration.k8s.io", "APIService") => 3,
        ("", "Pod" | "ReplicationController")
        | ("apps", _)
        | ("batch", _)
        | ("autoscaling", _)
        | ("networking.k8s.io", "Ingress") => 2,
        (g, _) if is_builtin_group(g) => 1,
        _ => 2,
    }
}

/// One reference of a `tendril.dev/depends-on` annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependsOn {
    /// Kind.
    pub kind: String,
    /// Group, when given as `Kind.group`.
    pub group: Option<String>,
    /// Namespace, when given as `Kind/namespace/name`.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A malformed reference in a `tendril.dev/depends-on` annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` {problem}")]
pub struct BadReference {
    /// The reference as written.
    pub reference: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Parses a `tendril.dev/depends-on` value: `Kind[.group]/[namespace/]name, ...`.
pub fn parse_depends_on(value: &str) -> Result<Vec<DependsOn>, BadReference> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split('/').map(str::trim).collect();
        let (kind_group, namespace, name) = match parts.as_slice() {
            [k, n] => (*k, None, *n),
            [k, ns, n] => (*k, Some(ns.to_string()), *n),
            _ => {
                return Err(BadReference {
                    reference: item.to_string(),
                    problem: "is not Kind[.group]/name or Kind[.group]/namespace/name",
                });
            }
        };
        if kind_group.is_empty() || name.is_empty() || namespace.as_deref() == Some("") {
            return Err(BadReference {
                reference: item.to_string(),
                problem: "has an empty part; write Kind[.group]/[namespace/]name",
            });
        }
        let (kind, group) = match kind_group.split_once('.') {
            Some((k, g)) => (k.to_string(), Some(g.to_string())),
            None => (kind_group.to_string(), None),
        };
        out.push(DependsOn {
            kind,
            group,
            namespace,
            name: name.to_string(),
        });
    }
    Ok(out)
}

fn matches(d: &DependsOn, dependent: &ObjectRef, target: &ObjectRef) -> bool {
    if d.kind != target.kind || d.name != target.name {
        return false;
    }
    if let Some(g) = &d.group
        && g != &target.group
    {
        return false;
    }
    match (&d.namespace, &target.namespace) {
        (Some(ns), Some(tns)) => ns == tns,
        (Some(_), None) => false,
        (None, None) => true,
        (None, Some(tns)) => dependent.namespace.as_deref() == Some(tns.as_str()),
    }
}

fn is_late(id: &ObjectRef) -> bool {
    stage(&id.group, &id.kind) == 3
}

/// Orders the nodes (see the module documentation).
pub fn plan(nodes: &[Node]) -> Result<Plan, ApplyError> {
    let n = nodes.len();
    let mut deps: Vec<Vec<(usize, Need)>> = vec![Vec::new(); n];
    let mut gates = vec![false; n];

    let mut crds: HashMap<(&str, &str), usize> = HashMap::new();
    let mut namespaces: HashMap<&str, usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Some((g, k)) = &node.defines {
            crds.insert((g.as_str(), k.as_str()), i);
        }
        if node.id.group.is_empty() && node.id.kind == "Namespace" {
            namespaces.insert(node.id.name.as_str(), i);
        }
    }
    let early: Vec<usize> = (0..n).filter(|&i| !is_late(&nodes[i].id)).collect();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(&c) = crds.get(&(node.id.group.as_str(), node.id.kind.as_str())) {
            deps[i].push((c, Need::Ready));
        }
        if let Some(ns) = &node.id.namespace
            && let Some(&j) = namespaces.get(ns.as_str())
        {
            deps[i].push((j, Need::Ready));
        }
        if let Some(value) = &node.depends_on {
            let refs = parse_depends_on(value).map_err(|message| ApplyError::Dependency {
                origin: node.source.clone(),
                object: node.id.to_string(),
                message: format!("bad {} annotation: {message}", super::DEPENDS_ON_ANNOTATION),
            })?;
            for d in refs {
                let found: Vec<usize> = (0..n)
                    .filter(|&j| j != i && matches(&d, &node.id, &nodes[j].id))
                    .collect();
                if found.is_empty() {
                    let ns = d
                        .namespace
                        .as_deref()
                        .map(|s| format!("{s}/"))
                        .unwrap_or_default();
                    return Err(ApplyError::Dependency {
                        origin: node.source.clone(),
                        object: node.id.to_string(),
                        message: format!(
                            "{} names {}/{ns}{}, which is not in this bundle; add it or remove the reference",
                            super::DEPENDS_ON_ANNOTATION,
                            d.kind,
                            d.name
                        ),
                    });
                }
                deps[i].extend(found.into_iter().map(|j| (j, Need::Ready)));
            }
        }
        if is_late(&node.id) {
            let ready: Vec<usize> = deps[i].iter().map(|&(j, _)| j).collect();
            deps[i].extend(
                early
                    .iter()
                    .filter(|j| !ready.contains(j))
                    .map(|&j| (j, Need::Applied)),
            );
        }
        deps[i].sort_unstable_by_key(|&(j, need)| (j, need == Need::Applied));
        deps[i].dedup_by_key(|&mut (j, _)| j);
        for &(j, need) in &deps[i] {
            if need == Need::Ready {
                gates[j] = true;
            }
        }
    }
    let waves = depths(nodes, &deps)?;
    Ok(Plan { deps, gates, waves })
}

/// Longest-path depths with cycle detection (iterative DFS), grouped into waves.
fn depths(nodes: &[Node], deps: &[Vec<(usize, Need)>]) -> Result<Vec<Vec<usize>>, ApplyError> {
    let n = nodes.len();
    let mut wave: Vec<Option<usize>> = vec![None; n];
    let mut on_stack = vec![false; n];
    for start in 0..n {
        if wave[start].is_some() {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        on_stack[start] = true;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if *next < deps[v].len() {
                let d = deps[v][*next].0;
                *next += 1;
                if wave[d].is_some() {
                    continue;
                }
                if on_stack[d] {
                    let pos = stack.iter().position(|&(x, _)| x == d).unwrap_or(0);
                    let mut names: Vec<String> = stack[pos..]
                        .iter()
                        .map(|&(x, _)| nodes[x].id.to_string())
                        .collect();
                    names.push(nodes[d].id.to_string());
                    return Err(ApplyError::Cycle {
                        cycle: names.join(" -> "),
                    });
                }
                on_stack[d] = true;
                stack.push((d, 0));
            } else {
                let w = deps[v]
                    .iter()
                    .filter_map(|&(d, _)| wave[d])
                    .map(|w| w + 1)
                    .fold(0, usize::max);
                wave[v] = Some(w);
                on_stack[v] = false;
                stack.pop();
            }
        }
    }
    let max = wave.iter().flatten().copied().max().unwrap_or(0);
    let mut waves: Vec<Vec<usize>> = vec![Vec::new(); max + 1];
    for (i, w) in wave.iter().enumerate() {
        waves[w.unwrap_or(0)].push(i);
    }
    waves.retain(|w| !w.is_empty());
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Node {
        let (group, version) = api_version
            .rsplit_once('/')
            .map(|(g, v)| (g.to_string(), v.to_string()))
            .unwrap_or((String::new(), api_version.to_string()));
        Node {
            id: ObjectRef {
                group,
                version,
                kind: kind.into(),
                namespace: ns.map(Into::into),
                name: name.into(),
            },
            source: format!("test#{name}"),
            depends_on: None,
            defines: None,
        }
    }

    fn wave_of(plan: &Plan, i: usize) -> usize {
        plan.wave_of(i)
    }

    fn crd(group: &str, kind: &str, name: &str) -> Node {
        let mut crd = node(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            name,
        );
        crd.defines = Some((group.into(), kind.into()));
        crd
    }

    #[test]
    fn only_what_needs_it_waits() {
        let nodes = vec![
            node("apps/v1", "Deployment", Some("a"), "web"),
            node("v1", "ConfigMap", Some("a"), "cfg"),
            node("v1", "Namespace", None, "a"),
            node(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                None,
                "hook",
            ),
            node("rbac.authorization.k8s.io/v1", "ClusterRole", None, "r"),
            node("v1", "ConfigMap", Some("elsewhere"), "other"),
        ];
        let p = plan(&nodes).unwrap();
        assert_eq!(wave_of(&p, 2), 0, "the namespace");
        assert_eq!(wave_of(&p, 4), 0, "a cluster object waits for nothing");
        assert_eq!(
            wave_of(&p, 5),
            0,
            "an object of another namespace does not wait"
        );
        assert_eq!(wave_of(&p, 0), 1);
        assert_eq!(wave_of(&p, 1), 1);
        assert_eq!(wave_of(&p, 3), 2, "the webhook comes after everything else");
        assert!(p.gates[2], "the namespace gates its objects");
        assert!(!p.gates[1] && !p.gates[4]);
        assert_eq!(p.deps[0], vec![(2, Need::Ready)]);
        assert!(p.deps[3].iter().all(|&(_, need)| need == Need::Applied));
    }

    #[test]
    fn crds_without_custom_resources_gate_nothing() {
        let nodes = vec![
            crd("example.com", "Widget", "widgets.example.com"),
            crd("example.com", "Gizmo", "gizmos.example.com"),
            node("v1", "ServiceAccount", Some("a"), "sa"),
        ];
        let p = plan(&nodes).unwrap();
        assert_eq!(p.waves.len(), 1, "one concurrent pass");
        assert!(!p.gates[0] && !p.gates[1]);
    }

    #[test]
    fn custom_resource_waits_for_its_crd_in_the_bundle() {
        let nodes = vec![
            node("example.com/v1", "Widget", Some("a"), "w"),
            crd("example.com", "Widget", "widgets.example.com"),
            crd("example.com", "Gizmo", "gizmos.example.com"),
        ];
        let p = plan(&nodes).unwrap();
        assert!(wave_of(&p, 1) < wave_of(&p, 0));
        assert_eq!(p.deps[0], vec![(1, Need::Ready)]);
        assert!(p.gates[1]);
        assert!(
            !p.gates[2],
            "a CRD no custom resource of the bundle uses gates nothing"
        );
    }

    #[test]
    fn depends_on_pushes_later_and_gates_the_target() {
        let mut app = node("apps/v1", "Deployment", Some("a"), "app");
        app.depends_on = Some("Job.batch/a/migrate, ConfigMap/cfg".into());
        let nodes = vec![
            app,
            node("batch/v1", "Job", Some("a"), "migrate"),
            node("v1", "ConfigMap", Some("a"), "cfg"),
        ];
        let p = plan(&nodes).unwrap();
        assert!(wave_of(&p, 0) > wave_of(&p, 1));
        assert!(p.gates[1] && p.gates[2]);
        assert_eq!(p.deps[0], vec![(1, Need::Ready), (2, Need::Ready)]);
    }

    #[test]
    fn depends_on_errors() {
        let mut a = node("v1", "ConfigMap", Some("a"), "x");
        a.depends_on = Some("Secret/a/missing".into());
        let err = plan(&[a]).unwrap_err();
        assert!(err.to_string().contains("not in this bundle"), "{err}");
        assert!(parse_depends_on("a/b/c/d").is_err());
        assert!(parse_depends_on("Kind//name").is_err());
        assert_eq!(
            parse_depends_on(" Deployment.apps/ns/web ").unwrap(),
            vec![DependsOn {
                kind: "Deployment".into(),
                group: Some("apps".into()),
                namespace: Some("ns".into()),
                name: "web".into()
            }]
        );
    }

    #[test]
    fn cycles_are_reported() {
        let mut a = node("v1", "ConfigMap", Some("n"), "a");
        a.depends_on = Some("ConfigMap/b".into());
        let mut b = node("v1", "ConfigMap", Some("n"), "b");
        b.depends_on = Some("ConfigMap/a".into());
        let err = plan(&[a, b]).unwrap_err();
        assert!(matches!(err, ApplyError::Cycle { .. }), "{err}");
        assert!(err.to_string().contains("ConfigMap/n/a"), "{err}");
    }
}
