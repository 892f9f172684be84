//! Ordering a bundle into waves.
//!
//! Every object gets a wave number: at least its classic stage ([`stage`]),
//! and at least one more than every object it depends on:
//!
//! - a custom resource depends on the CustomResourceDefinition in the bundle
//!   that defines its group and kind;
//! - a namespaced object depends on its Namespace when the bundle holds it;
//! - an object depends on whatever its `tendril.dev/depends-on` annotation names.
//!
//! Waves are applied in order, each concurrently. Before the next wave starts,
//! the *gates* of the finished wave must be ready: CRDs (Established),
//! Namespaces (Active) and every object another object names in
//! `tendril.dev/depends-on`.

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

/// The waves: indexes into the node list, plus which nodes gate later waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Non-empty waves in order; each holds node indexes in input order.
    pub waves: Vec<Vec<usize>>,
    /// `gates[i]`: node `i` must be ready before the next wave starts.
    pub gates: Vec<bool>,
    /// `deps[i]`: the nodes node `i` depends on (for skipping dependents of a failure).
    pub deps: Vec<Vec<usize>>,
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

/// The classic stage of a kind:
///
/// - 0: CustomResourceDefinitions and Namespaces;
/// - 1: other built-in cluster objects and namespaced configuration
///   (ServiceAccounts, Secrets, ConfigMaps, RBAC, Services, NetworkPolicies,
///   storage, quotas, ...);
/// - 2: workloads (Pods, Deployments, StatefulSets, DaemonSets, Jobs, ...),
///   Ingresses and custom resources;
/// - 3: admission webhooks and APIServices, last, so that they cannot reject
///   or intercept the rest of the bundle before their backends exist.
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
        (g, _) if BUILTIN_GROUPS.contains(&g) => 1,
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

/// Parses a `tendril.dev/depends-on` value: `Kind[.group]/[namespace/]name, ...`.
pub fn parse_depends_on(value: &str) -> Result<Vec<DependsOn>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split('/').map(str::trim).collect();
        let (kind_group, namespace, name) = match parts.as_slice() {
            [k, n] => (*k, None, *n),
            [k, ns, n] => (*k, Some(ns.to_string()), *n),
            _ => {
                return Err(format!(
                    "`{item}` is not Kind[.group]/name or Kind[.group]/namespace/name"
                ));
            }
        };
        if kind_group.is_empty() || name.is_empty() || namespace.as_deref() == Some("") {
            return Err(format!(
                "`{item}` has an empty part; write Kind[.group]/[namespace/]name"
            ));
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

/// Orders the nodes into waves (see the module documentation).
pub fn plan(nodes: &[Node]) -> Result<Plan, ApplyError> {
    let n = nodes.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut gates = vec![false; n];

    let mut crds: HashMap<(&str, &str), usize> = HashMap::new();
    let mut namespaces: HashMap<&str, usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Some((g, k)) = &node.defines {
            crds.insert((g.as_str(), k.as_str()), i);
            gates[i] = true;
        }
        if node.id.group.is_empty() && node.id.kind == "Namespace" {
            namespaces.insert(node.id.name.as_str(), i);
            gates[i] = true;
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        if let Some(&c) = crds.get(&(node.id.group.as_str(), node.id.kind.as_str())) {
            deps[i].push(c);
        }
        if let Some(ns) = &node.id.namespace
            && let Some(&j) = namespaces.get(ns.as_str())
        {
            deps[i].push(j);
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
                for j in found {
                    gates[j] = true;
                    deps[i].push(j);
                }
            }
        }
        deps[i].sort_unstable();
        deps[i].dedup();
    }

    // Longest-path levels with cycle detection (iterative DFS).
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
                let d = deps[v][*next];
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
                let base = stage(&nodes[v].id.group, &nodes[v].id.kind);
                let w = deps[v]
                    .iter()
                    .filter_map(|&d| wave[d])
                    .map(|w| w + 1)
                    .fold(base, usize::max);
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
    Ok(Plan { waves, gates, deps })
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
        plan.waves.iter().position(|w| w.contains(&i)).unwrap()
    }

    #[test]
    fn classic_stages() {
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
        ];
        let p = plan(&nodes).unwrap();
        assert_eq!(p.waves.len(), 4);
        assert_eq!(wave_of(&p, 2), 0);
        assert_eq!(wave_of(&p, 1), 1);
        assert_eq!(wave_of(&p, 4), 1);
        assert_eq!(wave_of(&p, 0), 2);
        assert_eq!(wave_of(&p, 3), 3);
        assert!(p.gates[2], "the namespace gates");
        assert!(!p.gates[1]);
    }

    #[test]
    fn custom_resource_waits_for_its_crd_in_the_bundle() {
        let mut crd = node(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        );
        crd.defines = Some(("example.com".into(), "Widget".into()));
        let nodes = vec![node("example.com/v1", "Widget", Some("a"), "w"), crd];
        let p = plan(&nodes).unwrap();
        assert!(wave_of(&p, 1) < wave_of(&p, 0));
        assert_eq!(p.deps[0], vec![1]);
        assert!(p.gates[1]);
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
        assert_eq!(p.deps[0], vec![1, 2]);
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
