//! The in-memory object store: objects, resource versions, managed fields,
//! the event log watches read from, and the write rules of the real server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::fields::{self, FieldSet, Part};
use super::registry::{self, ResourceType};
use super::util::{ApiError, Selector, now_rfc3339, qualified};

/// The annotation the controller-manager puts on `kube-root-ca.crt`.
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// How many events the log keeps; a watch from an older resourceVersion gets `410 Gone`.
const EVENT_LOG: usize = 20_000;

/// A watch event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as stored in the event log.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub rv: u64,
    pub gr: String,
    pub typ: EventType,
    pub obj: Arc<Value>,
    /// The object before the change (for MODIFIED), to tell selector transitions.
    pub prev: Option<Arc<Value>>,
}

/// `DeleteOptions` (body) and query parameters of a DELETE.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub dry_run: bool,
    /// `propagationPolicy` (or `orphanDependents`).
    pub propagation: Propagation,
    /// `orphanDependents: false` in the body (the real server then answers
    /// `202` for an object that is not gone at once).
    pub cascade_asked: bool,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// How a DELETE treats the object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents after.
    #[default]
    Background,
    /// The object gets the `foregroundDeletion` finalizer and stays until the
    /// garbage collector has deleted its blocking dependents.
    Foreground,
    /// The object gets the `orphan` finalizer; the garbage collector removes
    /// the dependents' owner references, then the finalizer.
    Orphan,
}

/// The garbage collector's finalizer of a foreground deletion.
const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The garbage collector's finalizer of an orphaning deletion.
const ORPHAN_FINALIZER: &str = "orphan";

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    pub force: bool,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
    /// The `fieldsV1` this entry was read from, while `fields` is unchanged.
    raw: Option<Value>,
}

impl Entry {
    fn same_slot(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

fn parse_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").into(),
            operation: e["operation"].as_str().unwrap_or("").into(),
            api_version: e["apiVersion"].as_str().unwrap_or("").into(),
            time: e["time"].as_str().unwrap_or("").into(),
            subresource: e["subresource"].as_str().unwrap_or("").into(),
            fields: fields::from_fields_v1(&e["fieldsV1"]),
            raw: Some(e["fieldsV1"].clone()),
        })
        .collect()
}

fn entries_json(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.raw.clone().unwrap_or_else(|| fields::to_fields_v1(&e.fields)),
                });
                if !e.subresource.is_empty() {
                    v["subresource"] = json!(e.subresource);
                }
                // An apply that changed nothing in the object records no time.
                if e.time.is_empty()
                    && let Some(o) = v.as_object_mut()
                {
                    o.remove("time");
                }
                v
            })
            .collect(),
    )
}

/// Storage key: (group-resource, namespace, name).
pub(crate) type Key = (String, String, String);

/// The whole server state, behind one mutex.
pub(crate) struct State {
    pub types: Vec<ResourceType>,
    objects: BTreeMap<Key, Arc<Value>>,
    pub rv: u64,
    events: VecDeque<Event>,
    /// Watches from a resourceVersion older than this get `410 Gone`.
    pub compacted: u64,
    counter: u64,
    seed: u64,
    /// When set, CRD writes are not served/established at once: their names
    /// wait here for the HTTP layer to run [`State::crd_changed`] later.
    pub crd_delay: bool,
    pub pending_crds: Vec<String>,
    /// CRDs (by name) going through their establishing sequence.
    crd_in_progress: std::collections::HashSet<String>,
    /// CRDs (by name) whose storage is initializing: lists get `429`.
    crd_initializing: std::collections::HashSet<String>,
    /// CRDs (by name) not yet Established: their group-version is `404`.
    crd_undiscoverable: std::collections::HashSet<String>,
    /// Namespaces deleted since the HTTP layer last looked: their contents
    /// and then they go after a delay, as the namespace controller does.
    pub pending_namespace_deletions: Vec<String>,
    /// Namespaces whose contents are being removed (they go once empty).
    finalizing: std::collections::HashSet<String>,
    /// Namespaces created since the HTTP layer last looked: they get
    /// `kube-root-ca.crt` shortly after, as from the controller-manager.
    pub pending_root_ca: Vec<String>,
    /// Objects (key and uid) deleted with `Foreground` or `Orphan`
    /// propagation since the HTTP layer last looked: the simulated garbage
    /// collector handles them a moment later.
    pub pending_gc: Vec<(Key, String)>,
    /// The PEM the simulated controller-manager publishes as `kube-root-ca.crt`.
    pub root_ca_pem: String,
    /// Last successful apply per (object, manager, status): the resulting
    /// resourceVersion and a hash of the request body.
    apply_memo: HashMap<(Key, String, bool), (String, u64)>,
}

impl State {
    pub fn new(seed: u64) -> State {
        let mut s = State {
            types: registry::builtins(),
            objects: BTreeMap::new(),
            rv: 1000,
            events: VecDeque::new(),
            compacted: 1000,
            counter: 0,
            seed,
            crd_delay: false,
            pending_crds: Vec::new(),
            crd_in_progress: std::collections::HashSet::new(),
            crd_initializing: std::collections::HashSet::new(),
            crd_undiscoverable: std::collections::HashSet::new(),
            pending_namespace_deletions: Vec::new(),
            finalizing: std::collections::HashSet::new(),
            pending_root_ca: Vec::new(),
            pending_gc: Vec::new(),
            root_ca_pem: String::new(),
            apply_memo: HashMap::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(rt) = s.find("", "v1", "namespaces") {
                let opts = WriteOpts {
                    manager: "kube-apiserver".into(),
                    ..WriteOpts::default()
                };
                let _ = s.create(&rt, "", body, &opts);
            }
        }
        // The log keeps everything from the start (a watch from
        // resourceVersion 1 replays it, as on a young real cluster) until it
        // holds EVENT_LOG changes.
        s.compacted = 0;
        s
    }

    /// What the controller-manager's root-CA publisher does for a new
    /// namespace: a `kube-root-ca.crt` ConfigMap holding the cluster CA.
    pub fn publish_root_ca(&mut self, ns: &str) {
        let Some(rt) = self.find("", "v1", "configmaps") else {
            return;
        };
        if self.get(&rt, ns, "kube-root-ca.crt").is_ok() {
            return;
        }
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
            "data": {"ca.crt": self.root_ca_pem},
        });
        let opts = WriteOpts {
            manager: "kube-controller-manager".into(),
            ..WriteOpts::default()
        };
        // A namespace that went meanwhile (or is terminating) gets nothing.
        let _ = self.create(&rt, ns, body, &opts);
    }

    /// What the namespace controller does for a deleted namespace: deletes
    /// its contents (finalizers honoured), then the namespace once empty.
    pub fn finalize_namespace(&mut self, ns: &str) {
        self.finalizing.insert(ns.to_owned());
        let keys: Vec<Key> = self
            .objects
            .keys()
            .filter(|(_, n, _)| n == ns)
            .cloned()
            .collect();
        for k in keys {
            self.delete_key(k);
        }
        self.finish_namespace(ns);
    }

    /// Whether any resource is served at group/version.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// The resource type served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn uid(&mut self) -> String {
        self.counter += 1;
        let a = self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (self.counter & 0xfff) as u16,
            self.counter ^ (self.seed & 0xffff_ffff_ffff)
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.counter += 1;
        let mut n = self
            .seed
            .wrapping_add(self.counter.wrapping_mul(0x2545_F491_4F6C_DD1D));
        (0..5)
            .map(|_| {
                let c = ALPHA[(n % ALPHA.len() as u64) as usize] as char;
                n /= ALPHA.len() as u64;
                c
            })
            .collect()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.objects
            .get(&(rt.group_resource(), ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Objects of `rt` in `ns` (all namespaces when `None`) matching both selectors.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> Vec<Arc<Value>> {
        let gr = rt.group_resource();
        let start = (gr.clone(), ns.unwrap_or("").to_owned(), String::new());
        self.objects
            .range(start..)
            .take_while(|((g, n, _), _)| *g == gr && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .filter(|v| labels.matches(v) && fields.matches(v))
            .cloned()
            .collect()
    }

    /// Events after `rv` (all resources); `Err` when `rv` is older than the log.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Event>, ()> {
        if rv < self.compacted {
            return Err(());
        }
        let start = self.events.partition_point(|e| e.rv <= rv);
        Ok(self.events.range(start..).cloned().collect())
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces".to_owned(), String::new(), ns.to_owned()))
    }

    /// Checks that `ns` exists and is not terminating (a 403 names `name`).
    fn check_namespace_for(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::no_route());
        }
        match self
            .objects
            .get(&("namespaces".to_owned(), String::new(), ns.to_owned()))
        {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n["status"]["phase"] == "Terminating" => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} \
                     because it is being terminated",
                    qualified(&rt.plural, &rt.group),
                ),
            )
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": [
                {"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"),
                 "field": "metadata.namespace"}]}))),
            Some(_) => Ok(()),
        }
    }

    fn emit(&mut self, gr: String, typ: EventType, obj: Arc<Value>, prev: Option<Arc<Value>>) {
        self.events.push_back(Event {
            rv: self.rv,
            gr,
            typ,
            obj,
            prev,
        });
        while self.events.len() > EVENT_LOG {
            if let Some(e) = self.events.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Checks an incoming object's apiVersion, kind, name and namespace.
    fn check_body(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: Option<&str>,
        body: &Value,
        need_type: bool,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let kind = body["kind"].as_str().unwrap_or("");
        let av = body["apiVersion"].as_str().unwrap_or("");
        if need_type && (kind.is_empty() || av.is_empty()) {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the request body; apiVersion and kind are required",
            ));
        }
        if !kind.is_empty() && kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the kind on the URL ({})",
                rt.kind
            )));
        }
        if !av.is_empty() {
            let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            if group != rt.group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        if let (Some(url_name), Some(body_name)) = (name, body["metadata"]["name"].as_str())
            && url_name != body_name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        if let Some(body_ns) = body["metadata"]["namespace"].as_str()
            && rt.namespaced
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    /// POST: creates an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.check_body(rt, ns, None, &body, true)?;
        let name = match body["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match body["metadata"]["generateName"].as_str() {
                Some(g) if !g.is_empty() => format!("{g}{}", self.suffix()),
                _ => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        &rt.group,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        self.check_namespace_for(rt, ns, &name)?;
        if self
            .objects
            .contains_key(&(rt.group_resource(), ns.to_owned(), name.clone()))
        {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        body["metadata"]["name"] = json!(name);
        if rt.status {
            body.as_object_mut().map(|o| o.remove("status"));
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // Set before ownership is computed: the creator owns the label.
            body["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        let mut entries = Vec::new();
        own_update(
            &mut entries,
            None,
            &body,
            rt,
            main_part(rt),
            &opts.manager,
            &now_rfc3339(),
        );
        self.finish(rt, ns, &name, None, body, entries, opts)
    }

    /// PUT (main resource or status).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.check_body(rt, ns, Some(name), &body, false)?;
        let old = self.get(rt, ns, name)?;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        self.write_new(rt, ns, name, &old, body, status, opts)
    }

    /// PATCH with a JSON merge patch, strategic merge patch or JSON patch.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        let mut new = (*old).clone();
        match kind {
            PatchKind::Merge => merge_patch(&mut new, &patch),
            PatchKind::Strategic => fields::merge(&mut new, &patch, rt),
            PatchKind::Json => json_patch(&mut new, &patch)?,
        }
        self.check_body(rt, ns, Some(name), &new, false)?;
        // `managedFields: [{}]` in a patch clears the managed fields.
        if patch["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|a| {
                !a.is_empty() && a.iter().all(|e| e.as_object().is_some_and(Map::is_empty))
            })
        {
            new["metadata"]["managedFields"] = json!([]);
        }
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        self.write_new(rt, ns, name, &old, new, status, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_new(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: &Arc<Value>,
        body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let (mut new, part) = if status {
            let mut n = (**old).clone();
            set_or_remove(&mut n, "status", body.get("status").cloned());
            (n, Part::Status)
        } else {
            let mut n = body;
            if rt.status {
                set_or_remove(&mut n, "status", old.get("status").cloned());
            }
            (n, main_part(rt))
        };
        let cleared = new["metadata"]["managedFields"]
            .as_array()
            .is_some_and(Vec::is_empty);
        let mut entries = if cleared {
            Vec::new()
        } else {
            parse_entries(old)
        };
        if cleared {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            return self.finish(rt, ns, name, Some(old.clone()), new, entries, opts);
        }
        own_update(
            &mut entries,
            Some(old),
            &new,
            rt,
            part,
            &opts.manager,
            &now_rfc3339(),
        );
        self.finish(rt, ns, name, Some(old.clone()), new, entries, opts)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        applied: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.check_body(rt, ns, Some(name), &applied, true)?;
        if !status {
            super::typed::check_apply_config(rt, ns, name, &applied)?;
        }
        if applied["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(ApiError::bad_request(
                "metadata.managedFields must be nil in an apply configuration",
            ));
        }
        let old = match self.get(rt, ns, name) {
            Ok(o) => Some(o),
            Err(_) if status => return Err(ApiError::not_found(&rt.group, &rt.plural, name)),
            Err(_) => {
                self.check_namespace_for(rt, ns, name)?;
                None
            }
        };
        if let (Some(o), Some(rv)) = (&old, applied["metadata"]["resourceVersion"].as_str())
            && Some(rv) != o["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let api_version = applied["apiVersion"].as_str().unwrap_or("").to_owned();
        let mut live = match &old {
            Some(o) => (**o).clone(),
            None => json!({
                "apiVersion": api_version,
                "kind": rt.kind,
                "metadata": {"name": name},
            }),
        };
        // The part of the configuration this request may change.
        let (part, subresource) = if status {
            (Part::Status, "status")
        } else {
            (main_part(rt), "")
        };
        let mut config = applied;
        if let Some(m) = config["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        let config = match part {
            Part::Status => json!({"status": config.get("status").cloned().unwrap_or(json!({}))}),
            Part::Main { with_status } => {
                if !with_status {
                    config.as_object_mut().map(|o| o.remove("status"));
                }
                config
            }
        };
        let mut new_set = fields::paths_of(&config, rt, part);
        if !rt.custom && rt.group.is_empty() && rt.plural == "services" {
            // The server defaults the configuration before it computes
            // ownership, so a port's key carries the default protocol.
            new_set.default_item_key(&["f:spec", "f:ports"], "protocol", &json!("TCP"));
        }
        let mut entries = parse_entries(&live);
        if let Some(o) = &old
            && o["metadata"]["managedFields"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            // An object nobody manages yet: what it holds is recorded as
            // owned by `before-first-apply`, as the real server does.
            own_update(
                &mut entries,
                None,
                o,
                rt,
                main_part(rt),
                "before-first-apply",
                &now_rfc3339(),
            );
        }
        let before: Value = without_managed_fields(&live);
        let mine = entries
            .iter()
            .position(|e| e.same_slot(&opts.manager, "Apply", subresource));

        // Conflicts: fields this apply sets to a different value that another manager owns.
        let mut conflicts: Vec<(usize, Vec<fields::Path>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if Some(i) == mine || e.manager == opts.manager || e.subresource != subresource {
                continue;
            }
            let hit = fields::conflicts(&new_set, &e.fields, Some(&config), Some(&live));
            if !hit.is_empty() {
                conflicts.push((i, hit));
            }
        }
        if !conflicts.is_empty() && !opts.force {
            let list: Vec<(String, String, Vec<String>)> = conflicts
                .iter()
                .map(|(i, hit)| {
                    // The real server names the version only for Update managers.
                    let using = if entries[*i].operation == "Update" {
                        format!(" using {}", entries[*i].api_version)
                    } else {
                        String::new()
                    };
                    (
                        entries[*i].manager.clone(),
                        using,
                        hit.iter().map(|p| fields::display(p)).collect(),
                    )
                })
                .collect();
            return Err(conflict_error(rt, name, &list));
        }
        for (i, hit) in &conflicts {
            // Forced: the fields change hands.
            let e = &mut entries[*i];
            for p in hit {
                e.fields.remove(p);
            }
            e.raw = None;
        }

        // Fields this manager applied before and no longer applies.
        let old_set = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();
        let mut others = FieldSet::default();
        for (i, e) in entries.iter().enumerate() {
            if Some(i) != mine {
                others.union(&e.fields);
            }
        }
        let keep = |p: &[String]| others.contains(p) || new_set.contains(p);
        for p in fields::removals(&old_set, &new_set, &others) {
            fields::remove_at(&mut live, &p, &keep);
        }
        fields::merge(&mut live, &config, rt);
        // The manager's time moves only when its apply changed the object.
        let changed = old.is_none() || without_managed_fields(&live) != before;
        let time = if changed {
            now_rfc3339()
        } else {
            String::new()
        };

        match mine {
            Some(i) if entries[i].fields == new_set && entries[i].api_version == api_version => {
                if changed {
                    entries[i].time = time;
                }
            }
            Some(i) => {
                let e = &mut entries[i];
                e.fields = new_set;
                e.api_version = api_version;
                if changed {
                    e.time = time;
                }
                e.raw = None;
            }
            None => entries.push(Entry {
                manager: opts.manager.clone(),
                operation: "Apply".into(),
                api_version,
                time,
                subresource: subresource.into(),
                fields: new_set,
                raw: None,
            }),
        }
        match old {
            Some(o) => self.finish(rt, ns, name, Some(o), live, entries, opts),
            None => {
                if rt.status {
                    live.as_object_mut().map(|o| o.remove("status"));
                }
                self.finish(rt, ns, name, None, live, entries, opts)
            }
        }
    }

    /// Common end of every write: protected metadata, defaults, validation,
    /// managedFields, generation, resourceVersion, storage and events.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Option<Arc<Value>>,
        mut new: Value,
        entries: Vec<Entry>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        if new["apiVersion"].as_str().is_none_or(str::is_empty) {
            new["apiVersion"] = json!(rt.api_version());
        }
        new["kind"] = json!(rt.kind);
        {
            let meta = new["metadata"]
                .as_object_mut()
                .ok_or_else(ApiError::no_route)?;
            meta.insert("name".into(), json!(name));
            if rt.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old.as_ref().and_then(|o| o["metadata"].get(k)) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
        }
        if old.is_none() {
            let uid = self.uid();
            new["metadata"]["uid"] = json!(uid);
            new["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        }
        defaults(self, rt, old.as_deref(), &mut new);
        super::typed::check_types(rt, &new)?;
        if let Some(schema) = &rt.schema {
            let causes = super::schema::check(&new, schema);
            if !causes.is_empty() {
                return Err(ApiError::invalid(&rt.kind, &rt.group, name, &causes));
            }
        }
        validate(rt, name, old.as_deref(), &new)?;

        let mut entries = entries;
        // A manager that owns nothing is not listed (not even the applier).
        entries.retain(|e| !e.fields.is_empty());
        sort_entries(&mut entries);
        if entries.is_empty() {
            new["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
        } else {
            new["metadata"]["managedFields"] = entries_json(&entries);
        }

        if let Some(o) = &old
            && **o == new
        {
            return Ok(new);
        }
        if rt.has_generation() {
            let generation = match &old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    if !same_spec(o, &new, rt) { g + 1 } else { g }
                }
            };
            new["metadata"]["generation"] = json!(generation);
        }
        if opts.dry_run {
            if old.is_none() {
                new["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("resourceVersion"));
            }
            return Ok(new);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let arc = Arc::new(new.clone());
        let gr = rt.group_resource();
        self.objects
            .insert((gr.clone(), ns.to_owned(), name.to_owned()), arc.clone());
        let typ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let key = (gr.clone(), ns.to_owned(), name.to_owned());
        let created_namespace = old.is_none() && rt.group.is_empty() && rt.plural == "namespaces";
        self.emit(gr, typ, arc, old);
        if created_namespace {
            self.pending_root_ca.push(name.to_owned());
        }
        // The last finalizer of an object being deleted is gone: it goes now.
        if !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && !(rt.group.is_empty() && rt.plural == "namespaces")
        {
            self.remove_key(key);
            return Ok(new);
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let established = new["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            if self.crd_delay && !established {
                // One establishing sequence per CRD at a time.
                if self.crd_in_progress.insert(name.to_owned()) {
                    self.pending_crds.push(name.to_owned());
                }
            } else if !self.crd_in_progress.contains(name) {
                self.crd_changed(name);
            }
        }
        Ok(new)
    }

    /// DELETE one object. Returns the object as it was at deletion (or, when
    /// finalizers hold it, marked with `deletionTimestamp`).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        if let Some(uid) = &opts.uid
            && old["metadata"]["uid"].as_str() != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    qualified(&rt.plural, &rt.group),
                    old["metadata"]["uid"].as_str().unwrap_or("")
                ),
            )
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural})));
        }
        if let Some(rv) = &opts.resource_version
            && old["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    qualified(&rt.plural, &rt.group),
                    old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ),
            )
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural})));
        }
        let dry_run = opts.dry_run;
        if rt.group.is_empty()
            && rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
            .with_details(json!({"name": name, "kind": "namespaces"})));
        }
        if dry_run {
            return Ok((*old).clone());
        }
        let key = (rt.group_resource(), ns.to_owned(), name.to_owned());
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // Terminating now (what a client sees in the response); the
            // namespace controller removes the contents and then the
            // namespace a moment later (see `finalize_namespace`).
            let first = old["metadata"]["deletionTimestamp"].is_null();
            let term = self.mark_deleting(&key, &old, true);
            if first {
                self.pending_namespace_deletions.push(name.to_owned());
            }
            return Ok(term);
        }
        // As the real server: Foreground and Orphan are finalizers the
        // garbage collector works on, the object stays until it is done.
        let gc_finalizer = match opts.propagation {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        };
        if let Some(finalizer) = gc_finalizer {
            let uid = old["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            let marked = self.mark_deleting_with(&key, &old, false, Some(finalizer));
            self.pending_gc.push((key, uid));
            return Ok(marked);
        }
        self.delete_key(key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// The garbage collector's work on an object deleted with `Orphan` or
    /// `Foreground` propagation: orphan its dependents, or delete them and
    /// release the owner once its blocking dependents are gone.
    pub fn collect_garbage(&mut self, key: &Key, uid: &str) {
        let Some(obj) = self.objects.get(key).cloned() else {
            return;
        };
        if obj["metadata"]["uid"].as_str() != Some(uid) {
            return;
        }
        if has_finalizer(&obj, ORPHAN_FINALIZER) {
            self.orphan_dependents(uid);
            self.remove_finalizer(key, ORPHAN_FINALIZER);
            return;
        }
        if has_finalizer(&obj, FOREGROUND_FINALIZER) {
            for dep in self.dependents_of(uid) {
                self.delete_key(dep);
            }
            self.release_foreground(uid);
        }
    }

    /// Keys of the objects whose ownerReferences name `uid`.
    fn dependents_of(&self, uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes `foregroundDeletion` from the owner with this uid once no
    /// dependent with `blockOwnerDeletion: true` is left.
    fn release_foreground(&mut self, uid: &str) {
        let Some(key) = self
            .objects
            .iter()
            .find(|(_, o)| o["metadata"]["uid"] == uid && has_finalizer(o, FOREGROUND_FINALIZER))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let blocked = self.objects.values().any(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["uid"] == uid && r["blockOwnerDeletion"] == true)
                })
        });
        if !blocked {
            self.remove_finalizer(&key, FOREGROUND_FINALIZER);
        }
    }

    /// Removes one finalizer (as its controller does); an object being
    /// deleted goes when that was its last one.
    fn remove_finalizer(&mut self, key: &Key, finalizer: &str) {
        let Some(old) = self.objects.get(key).cloned() else {
            return;
        };
        let mut v = (*old).clone();
        if let Some(fs) = v["metadata"]["finalizers"].as_array_mut() {
            fs.retain(|f| f != finalizer);
            if fs.is_empty() {
                v["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("finalizers"));
            }
        }
        let last = v["metadata"]["finalizers"].is_null();
        self.rv += 1;
        v["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let arc = Arc::new(v);
        self.objects.insert(key.clone(), arc.clone());
        self.emit(key.0.clone(), EventType::Modified, arc.clone(), Some(old));
        if last && !arc["metadata"]["deletionTimestamp"].is_null() {
            self.remove_key(key.clone());
        }
    }

    /// Drops the owner reference to `uid` from its dependents (`Orphan` propagation).
    fn orphan_dependents(&mut self, uid: &str) {
        let dependents: Vec<(Key, Arc<Value>)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, old) in dependents {
            let mut v = (*old).clone();
            if let Some(refs) = v["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"] != uid);
                if refs.is_empty() {
                    v["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("ownerReferences"));
                }
            }
            self.rv += 1;
            v["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            let arc = Arc::new(v);
            self.objects.insert(key.clone(), arc.clone());
            self.emit(key.0, EventType::Modified, arc, Some(old));
        }
    }

    /// Sets `deletionTimestamp` (and a Terminating phase for namespaces).
    fn mark_deleting(&mut self, key: &Key, old: &Arc<Value>, namespace: bool) -> Value {
        self.mark_deleting_with(key, old, namespace, None)
    }

    /// Sets `deletionTimestamp` (and a Terminating phase for namespaces), and
    /// adds the garbage collector's `finalizer` when given (replacing the
    /// other one of the two), as the real server's delete does. Marking
    /// bumps `generation` where the kind has one.
    fn mark_deleting_with(
        &mut self,
        key: &Key,
        old: &Arc<Value>,
        namespace: bool,
        finalizer: Option<&str>,
    ) -> Value {
        let deleting = !old["metadata"]["deletionTimestamp"].is_null();
        let needs_finalizer = finalizer.is_some_and(|f| !has_finalizer(old, f));
        if deleting && !needs_finalizer {
            return (**old).clone();
        }
        let mut marked = (**old).clone();
        if let Some(f) = finalizer {
            let mut list: Vec<Value> = marked["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            list.retain(|x| x != FOREGROUND_FINALIZER && x != ORPHAN_FINALIZER);
            list.push(json!(f));
            marked["metadata"]["finalizers"] = Value::Array(list);
        }
        if !deleting {
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            if namespace {
                marked["status"]["phase"] = json!("Terminating");
            } else {
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            if let Some(g) = marked["metadata"]["generation"].as_i64()
                && g > 0
            {
                marked["metadata"]["generation"] = json!(g + 1);
            }
        }
        self.rv += 1;
        marked["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let arc = Arc::new(marked.clone());
        self.objects.insert(key.clone(), arc.clone());
        self.emit(key.0.clone(), EventType::Modified, arc, Some(old.clone()));
        marked
    }

    /// Deletes the object at `key`, honouring finalizers; then its dependents
    /// (ownerReferences, background propagation) and what else depends on
    /// its removal.
    fn delete_key(&mut self, key: Key) -> Option<Value> {
        let obj = self.objects.get(&key)?.clone();
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            return Some(self.mark_deleting(&key, &obj, false));
        }
        self.remove_key(key)
    }

    /// Removes the object at `key` now, with the consequences of its removal.
    fn remove_key(&mut self, key: Key) -> Option<Value> {
        let old = self.objects.remove(&key)?;
        self.rv += 1;
        let mut v = (*old).clone();
        v["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let arc = Arc::new(v.clone());
        self.emit(key.0.clone(), EventType::Deleted, arc, Some(old));
        // An owner in foreground deletion may be waiting for this one.
        let owners: Vec<String> = v["metadata"]["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter(|r| r["blockOwnerDeletion"] == true)
                    .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for owner in owners {
            self.release_foreground(&owner);
        }
        // Garbage collection of dependents.
        if let Some(uid) = v["metadata"]["uid"].as_str() {
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in dependents {
                self.delete_key(k);
            }
        }
        if key.0 == "customresourcedefinitions.apiextensions.k8s.io" {
            self.crd_changed(&key.2);
        }
        if !key.1.is_empty() {
            self.finish_namespace(&key.1);
        }
        Some(v)
    }

    /// Removes a Terminating namespace once nothing is left in it.
    fn finish_namespace(&mut self, ns: &str) {
        let key = ("namespaces".to_owned(), String::new(), ns.to_owned());
        let terminating = self
            .objects
            .get(&key)
            .is_some_and(|n| !n["metadata"]["deletionTimestamp"].is_null());
        if terminating
            && self.finalizing.contains(ns)
            && !self.objects.keys().any(|(_, n, _)| n == ns)
        {
            self.finalizing.remove(ns);
            self.remove_key(key);
        }
    }

    /// Re-derives the served custom resources after a CRD changed, marks a
    /// new CRD Established (as the apiextensions controllers do), and drops
    /// the custom resources of a deleted CRD.
    pub fn crd_changed(&mut self, crd_name: &str) {
        self.crd_in_progress.remove(crd_name);
        self.crd_initializing.remove(crd_name);
        self.crd_undiscoverable.remove(crd_name);
        self.crd_progress(crd_name, true);
    }

    /// The first stage of a new CRD while it establishes (with a CRD
    /// delay): names accepted, `Established=False` (`Installing`), its
    /// resources known but their storage still initializing (lists get
    /// `429`), its group-version not yet in discovery.
    pub fn crd_names_accepted(&mut self, crd_name: &str) {
        self.crd_initializing.insert(crd_name.to_owned());
        self.crd_undiscoverable.insert(crd_name.to_owned());
        self.crd_progress(crd_name, false);
    }

    /// The second stage: the storage is ready (lists are served), the
    /// group-version is still not discoverable until `Established`.
    pub fn crd_storage_ready(&mut self, crd_name: &str) {
        self.crd_initializing.remove(crd_name);
    }

    /// Whether requests for `rt` get `429` because its storage initializes.
    pub fn initializing(&self, rt: &ResourceType) -> bool {
        rt.custom && self.crd_initializing.contains(&rt.group_resource())
    }

    /// The types discovery lists: not those of CRDs still establishing.
    pub fn discoverable_types(&self) -> Vec<ResourceType> {
        self.types
            .iter()
            .filter(|t| !(t.custom && self.crd_undiscoverable.contains(&t.group_resource())))
            .cloned()
            .collect()
    }

    /// Whether group/version is only served by CRDs not yet Established.
    pub fn undiscoverable(&self, group: &str, version: &str) -> bool {
        let served: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect();
        !served.is_empty()
            && served
                .iter()
                .all(|t| t.custom && self.crd_undiscoverable.contains(&t.group_resource()))
    }

    fn crd_progress(&mut self, crd_name: &str, establish: bool) {
        let crds: Vec<Arc<Value>> = self
            .objects
            .iter()
            .filter(|((g, _, _), _)| g == "customresourcedefinitions.apiextensions.k8s.io")
            .map(|(_, v)| v.clone())
            .collect();
        let mut types = registry::builtins();
        for crd in &crds {
            for t in registry::from_crd(crd) {
                if !types
                    .iter()
                    .any(|b| b.group == t.group && b.version == t.version && b.plural == t.plural)
                {
                    types.push(t);
                }
            }
        }
        let served_before: Vec<String> = self.types.iter().map(|t| t.group_resource()).collect();
        self.types = types;
        // Custom resources whose CRD is gone.
        let served_now: Vec<String> = self.types.iter().map(|t| t.group_resource()).collect();
        for gr in served_before.iter().filter(|g| !served_now.contains(g)) {
            let keys: Vec<Key> = self
                .objects
                .keys()
                .filter(|(g, _, _)| g == gr)
                .cloned()
                .collect();
            for k in keys {
                self.remove_key(k);
            }
        }
        let Some(crd) = crds
            .iter()
            .find(|c| c["metadata"]["name"].as_str() == Some(crd_name))
            .cloned()
        else {
            return;
        };
        let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        let accepted_same = crd["status"]["acceptedNames"] == accepted_names(&crd);
        if (established || !establish) && accepted_same {
            return;
        }
        let Some(rt) = self.find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
            return;
        };
        let now = now_rfc3339();
        let storage = crd["spec"]["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
            .and_then(|v| v["name"].as_str())
            .unwrap_or("v1");
        let body = json!({"status": {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                 "reason": "NoConflicts", "message": "no conflicts found"},
                if establish {
                    json!({"type": "Established", "status": "True", "lastTransitionTime": now,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"})
                } else {
                    json!({"type": "Established", "status": "False", "lastTransitionTime": now,
                     "reason": "Installing", "message": "the initial names have been accepted"})
                },
            ],
            "acceptedNames": accepted_names(&crd),
            "storedVersions": [storage],
        }});
        let opts = WriteOpts {
            manager: "kube-apiserver".into(),
            ..WriteOpts::default()
        };
        let _ = self.write_new(&rt, "", crd_name, &crd, body, true, &opts);
    }

    /// The current objects of every kind, for snapshot-style watches.
    pub fn all_of(&self, gr: &str) -> Vec<Arc<Value>> {
        let start = (gr.to_owned(), String::new(), String::new());
        self.objects
            .range(start..)
            .take_while(|((g, _, _), _)| g == gr)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The live object when `manager`'s last apply to it had this body hash
    /// and nothing changed the object since (so this apply is a no-op).
    pub fn memo_hit(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        manager: &str,
        status: bool,
        hash: u64,
    ) -> Option<Arc<Value>> {
        let key = (rt.group_resource(), ns.to_owned(), name.to_owned());
        let live = self.objects.get(&key)?;
        let (rv, h) = self.apply_memo.get(&(key, manager.to_owned(), status))?;
        (*h == hash && live["metadata"]["resourceVersion"].as_str() == Some(rv.as_str()))
            .then(|| live.clone())
    }

    /// Records a successful apply for [`State::memo_hit`].
    #[allow(clippy::too_many_arguments)]
    pub fn memo_store(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        manager: &str,
        status: bool,
        hash: u64,
        result: &Value,
    ) {
        let key = (rt.group_resource(), ns.to_owned(), name.to_owned());
        let live_rv = self
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["resourceVersion"].as_str().map(str::to_owned));
        // Only when the stored object is the one this apply produced.
        if let Some(rv) = live_rv
            && result["metadata"]["resourceVersion"].as_str() == Some(rv.as_str())
        {
            self.apply_memo
                .insert((key, manager.to_owned(), status), (rv, hash));
        }
    }

    /// Whether `ns` exists (for tests of namespace deletion inside this crate).
    #[allow(dead_code)]
    pub fn has_namespace(&self, ns: &str) -> bool {
        self.namespace_exists(ns)
    }
}

/// Whether the object's `metadata.finalizers` holds `finalizer`.
fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|fs| fs.iter().any(|f| f == finalizer))
}

fn accepted_names(crd: &Value) -> Value {
    let mut names = crd["spec"]["names"].clone();
    if let Some(kind) = names["kind"].as_str().map(str::to_owned) {
        if names["singular"].as_str().is_none_or(str::is_empty) {
            names["singular"] = json!(kind.to_lowercase());
        }
        if names["listKind"].as_str().is_none_or(str::is_empty) {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    names
}

fn main_part(rt: &ResourceType) -> Part {
    Part::Main {
        with_status: !rt.status,
    }
}

fn set_or_remove(obj: &mut Value, key: &str, v: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match v {
            Some(v) => {
                o.insert(key.into(), v);
            }
            None => {
                o.remove(key);
            }
        }
    }
}

/// Whether everything but metadata (and status, for kinds with a status
/// subresource) is equal: what decides a new `metadata.generation`.
fn same_spec(a: &Value, b: &Value, rt: &ResourceType) -> bool {
    let skip = |k: &str| k == "metadata" || (rt.status && k == "status");
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let count = |m: &Map<String, Value>| m.keys().filter(|k| !skip(k)).count();
    count(a) == count(b)
        && a.iter()
            .filter(|(k, _)| !skip(k))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Ownership after a non-apply write: changed fields go to `manager`'s
/// Update entry and are taken from everyone else; fields that are gone are
/// owned by nobody.
fn own_update(
    entries: &mut Vec<Entry>,
    old: Option<&Value>,
    new: &Value,
    rt: &ResourceType,
    part: Part,
    manager: &str,
    now: &str,
) {
    let subresource = if part == Part::Status { "status" } else { "" };
    let new_paths = fields::paths_of(new, rt, part);
    let mut changed = fields::changed(&new_paths, old, Some(new));
    fields::mark_created_maps(&mut changed, old, new);
    for e in entries.iter_mut() {
        let a = e.fields.subtract(&changed);
        let b = e.fields.retain_present(new);
        if a || b {
            e.raw = None;
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_slot(manager, "Update", subresource))
        {
            Some(e) => {
                e.fields.union(&changed);
                e.time = now.to_owned();
                e.api_version = new["apiVersion"].as_str().unwrap_or("").into();
                e.raw = None;
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: new["apiVersion"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| rt.api_version()),
                time: now.into(),
                subresource: subresource.into(),
                fields: changed,
                raw: None,
            }),
        }
    }
}

/// The object without `metadata.managedFields`.
fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

/// Orders `managedFields` as the real server does: Apply before Update,
/// then by time (none first), manager, apiVersion and subresource.
fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|p, q| {
        (p.operation.as_str(), p.time.as_str(), p.manager.as_str())
            .cmp(&(q.operation.as_str(), q.time.as_str(), q.manager.as_str()))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
}

fn conflict_error(
    rt: &ResourceType,
    name: &str,
    conflicts: &[(String, String, Vec<String>)],
) -> ApiError {
    let total: usize = conflicts.iter().map(|(_, _, f)| f.len()).sum();
    let mut msg = format!(
        "Apply failed with {total} conflict{}: ",
        if total == 1 { "" } else { "s" }
    );
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for (manager, using, fields) in conflicts {
        let head = format!(
            "conflict{} with \"{manager}\"{using}",
            if fields.len() == 1 { "" } else { "s" }
        );
        if fields.len() == 1 {
            parts.push(format!("{head}: {}", fields[0]));
        } else {
            let lines: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
            parts.push(format!("{head}:\n{}", lines.join("\n")));
        }
        for f in fields {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\"{using}"),
                "field": f,
            }));
        }
    }
    msg.push_str(&parts.join("\n"));
    ApiError::new(409, "Conflict", msg).with_details(json!({
        "name": name,
        "group": rt.group,
        "kind": rt.plural,
        "causes": causes,
    }))
}

/// The real server's defaults for a pod template's spec.
fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let latest = c["image"].as_str().is_some_and(|i| {
                i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or(i).contains(':')
            });
            for (k, v) in [
                ("resources", json!({})),
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                (
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                ),
            ] {
                if c[k].is_null() {
                    c[k] = v;
                }
            }
        }
    }
}

/// The real server's Service defaults and node-port allocation.
fn service_defaults(state: &mut State, old: Option<&Value>, new: &mut Value) {
    let typ = new["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    if typ == "ExternalName" {
        return;
    }
    let spec = &mut new["spec"];
    for (k, v) in [
        ("sessionAffinity", json!("None")),
        ("ipFamilies", json!(["IPv4"])),
        ("ipFamilyPolicy", json!("SingleStack")),
        ("internalTrafficPolicy", json!("Cluster")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    let external = typ == "LoadBalancer" || typ == "NodePort";
    if external && spec["externalTrafficPolicy"].is_null() {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if typ == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].is_null() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    let old_ports = old
        .map(|o| o["spec"]["ports"].clone())
        .unwrap_or(Value::Null);
    for p in spec["ports"].as_array_mut().into_iter().flatten() {
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
        if external && p["nodePort"].is_null() {
            let kept = old_ports
                .as_array()
                .and_then(|ps| {
                    ps.iter()
                        .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                })
                .map(|o| o["nodePort"].clone())
                .filter(|n| !n.is_null());
            p["nodePort"] = kept.unwrap_or_else(|| {
                state.counter += 1;
                json!(30000 + state.counter % 2768)
            });
        }
    }
    if !new["status"]["loadBalancer"].is_object() {
        new["status"] = json!({"loadBalancer": {}});
    }
    for ing in new["status"]["loadBalancer"]["ingress"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if !ing["ip"].is_null() && ing["ipMode"].is_null() {
            ing["ipMode"] = json!("VIP");
        }
    }
}

/// What the API server's defaulting and allocation would add.
fn defaults(state: &mut State, rt: &ResourceType, old: Option<&Value>, new: &mut Value) {
    if rt.custom {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "replicationcontrollers")
            if new["spec"].is_object() && new["spec"]["replicas"].is_null() =>
        {
            new["spec"]["replicas"] = json!(1);
        }
        ("", "namespaces") => {
            let name = new["metadata"]["name"].clone();
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if new["spec"]["finalizers"].is_null() {
                new["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if new["status"]["phase"].is_null() {
                new["status"] = json!({"phase": "Active"});
            }
        }
        ("", "pods") if new["status"]["phase"].is_null() => {
            new["status"]["phase"] = json!("Pending");
        }
        ("", "secrets") => {
            // stringData is write-only: merged into data, base64-encoded.
            if let Some(Value::Object(sd)) =
                new.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !new["data"].is_object() {
                    new["data"] = json!({});
                }
                for (k, v) in sd {
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    new["data"][k] = json!(super::util::base64(text.as_bytes()));
                }
            }
            if new["type"].is_null() {
                new["type"] = json!("Opaque");
            }
        }
        ("", "services") => {
            if !new["spec"].is_object() {
                new["spec"] = json!({});
            }
            if new["spec"]["type"].is_null() {
                new["spec"]["type"] = json!("ClusterIP");
            }
            let old_ip = old
                .and_then(|o| o["spec"]["clusterIP"].as_str())
                .map(str::to_owned);
            if new["spec"]["type"] != "ExternalName"
                && new["spec"]["clusterIP"].as_str().is_none_or(str::is_empty)
            {
                let ip = match old_ip {
                    Some(ip) => ip,
                    None => {
                        state.counter += 1;
                        let n = state.counter;
                        format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 2)
                    }
                };
                new["spec"]["clusterIP"] = json!(ip);
            }
            if let Some(ip) = new["spec"]["clusterIP"].as_str().map(str::to_owned)
                && new["spec"]["clusterIPs"].is_null()
            {
                new["spec"]["clusterIPs"] = json!([ip]);
            }
            service_defaults(state, old, new);
        }
        ("apps", "deployments") if new["spec"].is_object() => {
            let spec = &mut new["spec"];
            if spec["replicas"].is_null() {
                spec["replicas"] = json!(1);
            }
            if spec["strategy"].is_null() {
                spec["strategy"] = json!({"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
            }
            if spec["revisionHistoryLimit"].is_null() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec["progressDeadlineSeconds"].is_null() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
            pod_spec_defaults(&mut spec["template"]["spec"]);
            if new["status"].is_null() {
                new["status"] = json!({});
            }
        }
        ("apps", "statefulsets" | "daemonsets" | "replicasets") if new["spec"].is_object() => {
            if rt.plural != "daemonsets" && new["spec"]["replicas"].is_null() {
                new["spec"]["replicas"] = json!(1);
            }
            pod_spec_defaults(&mut new["spec"]["template"]["spec"]);
        }
        _ => {}
    }
}

/// The immutable-field and required-field rules tests rely on.
fn validate(
    rt: &ResourceType,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let mut causes: Vec<(String, String)> = Vec::new();
    if old.is_none() {
        // Names: DNS labels for namespaces and services, DNS subdomains otherwise.
        let label = rt.group.is_empty() && matches!(rt.plural.as_str(), "namespaces" | "services");
        let checked = if rt.group == "rbac.authorization.k8s.io" {
            // RBAC names are path segments (`system:aggregate-to-admin` is fine).
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
                Err("may not be '.' or '..' and may not contain '/' or '%'".to_owned())
            } else {
                Ok(())
            }
        } else {
            check_name(name, label)
        };
        if let Err(why) = checked {
            causes.push((
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": {why}"),
            ));
        }
    }
    check_labels(new, &mut causes);
    if let Some(old) = old
        && !old["metadata"]["deletionTimestamp"].is_null()
    {
        let before: Vec<&str> = old["metadata"]["finalizers"]
            .as_array()
            .map(|fs| fs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut added: Vec<&str> = new["metadata"]["finalizers"]
            .as_array()
            .map(|fs| fs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        added.retain(|f| !before.contains(f));
        added.sort_unstable();
        added.dedup();
        if !added.is_empty() {
            let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
            causes.push((
                "metadata.finalizers".into(),
                format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    let immutable = |path: &[&str], field: &str, causes: &mut Vec<(String, String)>| {
        let Some(old) = old else { return };
        let get = |v: &Value| {
            let mut cur = v;
            for p in path {
                cur = &cur[*p];
            }
            cur.clone()
        };
        let (a, b) = (get(old), get(new));
        if !a.is_null() && a != b {
            causes.push((
                field.into(),
                format!("Invalid value: {b}: field is immutable"),
            ));
        }
    };
    if let (("", "configmaps" | "secrets"), Some(o)) =
        ((rt.group.as_str(), rt.plural.as_str()), old)
        && o["immutable"] == true
    {
        let msg = "Forbidden: field is immutable when `immutable` is set";
        if o["data"] != new["data"] || o["binaryData"] != new["binaryData"] {
            causes.push(("data".into(), msg.into()));
        }
        if new["immutable"] != true {
            causes.push(("immutable".into(), msg.into()));
        }
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") if new["spec"]["type"] != "ExternalName" => {
            if let Some(o) = old
                && !o["spec"]["clusterIP"].is_null()
                && o["spec"]["clusterIP"] != new["spec"]["clusterIP"]
            {
                causes.push((
                    "spec.clusterIPs[0]".into(),
                    format!(
                        "Invalid value: [{}]: may not change once set",
                        new["spec"]["clusterIP"]
                    ),
                ));
            }
            // Status is validated too (it is written through /status).
            let ingress = &new["status"]["loadBalancer"]["ingress"];
            if new["spec"]["type"] != "LoadBalancer"
                && ingress.as_array().is_some_and(|a| !a.is_empty())
            {
                causes.push((
                    "status.loadBalancer.ingress".into(),
                    "Forbidden: may only be used when `spec.type` is 'LoadBalancer'".into(),
                ));
            }
        }
        ("apps", "deployments" | "daemonsets" | "replicasets") => {
            immutable(&["spec", "selector"], "spec.selector", &mut causes);
        }
        ("apps", "statefulsets") => {
            immutable(&["spec", "selector"], "spec.selector", &mut causes);
            if let Some(o) = old {
                let frozen = |v: &Value| {
                    let mut s = v["spec"].clone();
                    if let Some(m) = s.as_object_mut() {
                        for k in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                            "selector",
                        ] {
                            m.remove(k);
                        }
                    }
                    s
                };
                if frozen(o) != frozen(new) {
                    causes.push((
                        "spec".into(),
                        "Forbidden: updates to statefulset spec for fields other than 'replicas', \
                         'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' \
                         and 'minReadySeconds' are forbidden"
                            .into(),
                    ));
                }
            }
        }
        ("", "pods") => {
            if let Some(o) = old {
                // Only images, activeDeadlineSeconds, tolerations (additions) and
                // terminationGracePeriodSeconds may change in a Pod's spec.
                let strip = |v: &Value| {
                    let mut spec = v["spec"].clone();
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = spec[list].as_array_mut() {
                            for c in cs {
                                if let Some(c) = c.as_object_mut() {
                                    c.remove("image");
                                }
                            }
                        }
                    }
                    if let Some(m) = spec.as_object_mut() {
                        for k in [
                            "activeDeadlineSeconds",
                            "tolerations",
                            "terminationGracePeriodSeconds",
                        ] {
                            m.remove(k);
                        }
                    }
                    spec
                };
                if strip(o) != strip(new) {
                    causes.push((
                        "spec".into(),
                        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, \
                         `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` \
                         (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` \
                         (allow it to be set to 1 if it was previously negative)"
                            .into(),
                    ));
                }
            }
        }
        ("batch", "jobs") => {
            immutable(&["spec", "template"], "spec.template", &mut causes);
            immutable(&["spec", "selector"], "spec.selector", &mut causes);
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let group = new["spec"]["group"].as_str().unwrap_or("");
            let plural = new["spec"]["names"]["plural"].as_str().unwrap_or("");
            if name != format!("{plural}.{group}") {
                causes.push((
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                    ),
                ));
            }
            if new["spec"]["names"]["kind"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                causes.push(("spec.names.kind".into(), "Required value".into()));
            }
            if new["spec"]["versions"].as_array().is_none_or(Vec::is_empty) {
                causes.push((
                    "spec.versions".into(),
                    "Invalid value: null: must have exactly one version marked as storage version"
                        .into(),
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.kind, &rt.group, name, &causes))
    }
}

/// A label value or the name part of a qualified name: at most 63
/// characters, alphanumerics with `-`, `_`, `.` inside.
fn label_value_ok(v: &str, allow_empty: bool) -> bool {
    if v.is_empty() {
        return allow_empty;
    }
    let b = v.as_bytes();
    v.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A qualified name (`prefix/name` or `name`), as label and annotation keys are.
fn qualified_name_ok(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => check_name(prefix, false).is_ok() && label_value_ok(name, false),
        None => label_value_ok(k, false),
    }
}

/// Label keys and values, annotation keys and size, as the real server checks them.
fn check_labels(obj: &Value, causes: &mut Vec<(String, String)>) {
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !qualified_name_ok(k) {
                causes.push((
                    "metadata.labels".into(),
                    format!(
                        "Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', \
                         and must start and end with an alphanumeric character (at most 63 characters, \
                         with an optional DNS subdomain prefix and '/')"
                    ),
                ));
            }
            match v.as_str() {
                Some(text) if label_value_ok(text, true) => {}
                _ => causes.push((
                    "metadata.labels".into(),
                    format!(
                        "Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric \
                         characters, '-', '_' or '.', and must start and end with an alphanumeric character \
                         (at most 63 characters)"
                    ),
                )),
            }
        }
    }
    if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !qualified_name_ok(k) {
                causes.push((
                    "metadata.annotations".into(),
                    format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            if !v.is_string() {
                causes.push((
                    "metadata.annotations".into(),
                    format!("Invalid value: {v}: must be a string"),
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push((
                "metadata.annotations".into(),
                format!("Too long: may not be more than 262144 bytes (got {total})"),
            ));
        }
    }
}

/// RFC 1123 label (63 chars, no dots) or subdomain (253 chars) names.
fn check_name(name: &str, label: bool) -> Result<(), String> {
    let max = if label { 63 } else { 253 };
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends = name
        .chars()
        .next()
        .zip(name.chars().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    let parts_ok = label
        || name
            .split('.')
            .all(|p| !p.is_empty() && !p.starts_with('-') && !p.ends_with('-'));
    if !name.is_empty() && name.len() <= max && ok_chars && ends && parts_ok {
        return Ok(());
    }
    Err(if label {
        format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (at most {max} characters)"
        )
    } else {
        format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (at most {max} characters)"
        )
    })
}

/// Which non-apply patch a PATCH request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        let bad = |m: &str| {
            ApiError::new(
                422,
                "Invalid",
                format!("the JSON patch failed: {m} at {path:?}"),
            )
        };
        match op["op"].as_str().unwrap_or("") {
            "add" => pointer_add(target, path, op["value"].clone()).ok_or_else(|| bad("add"))?,
            "replace" => {
                let slot = target
                    .pointer_mut(path)
                    .ok_or_else(|| bad("replace: missing path"))?;
                *slot = op["value"].clone();
            }
            "remove" => {
                pointer_remove(target, path).ok_or_else(|| bad("remove: missing path"))?;
            }
            "test" => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(bad("test failed"));
                }
            }
            "copy" | "move" => {
                let from = op["from"].as_str().unwrap_or("");
                let v = target
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| bad("missing from"))?;
                if op["op"] == "move" {
                    pointer_remove(target, from).ok_or_else(|| bad("move"))?;
                }
                pointer_add(target, path, v).ok_or_else(|| bad("add"))?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch op {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Option<(String, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_add(target: &mut Value, path: &str, v: Value) -> Option<()> {
    if path.is_empty() {
        *target = v;
        return Some(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent)? {
        Value::Object(o) => {
            o.insert(last, v);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
            } else {
                let i: usize = last.parse().ok()?;
                if i > a.len() {
                    return None;
                }
                a.insert(i, v);
            }
        }
        _ => return None,
    }
    Some(())
}

fn pointer_remove(target: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent)? {
        Value::Object(o) => o.remove(&last),
        Value::Array(a) => {
            let i: usize = last.parse().ok()?;
            (i < a.len()).then(|| a.remove(i))
        }
        _ => None,
    }
}
