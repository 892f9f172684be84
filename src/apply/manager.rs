//! The resource manager: discovery, staged server-side apply, waiting.

use super::diagnose;
use super::plan::{self, Node};
use super::readiness::{self, Readiness, ReadinessOptions};
use super::report::{Action, ApplyEvent, ApplyReport, FieldConflict, ObjectResult, Status};
use super::{ApplyError, DEPENDS_ON_ANNOTATION, Manifest, ObjectRef};
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, GetParams, Patch, PatchParams, PropagationPolicy,
};
use kube::core::{ApiResource, Request, Resource};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The field manager used unless another is configured.
pub const DEFAULT_FIELD_MANAGER: &str = "tendril";

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Server-side apply field manager (`tendril` by default).
    pub field_manager: String,
    /// Take over fields other managers own (`force=true`); off by default.
    pub force_conflicts: bool,
    /// Ask the server to run everything as a dry run (`dryRun=All`); nothing is persisted.
    pub dry_run: bool,
    /// After applying, wait until every object is ready.
    pub wait: bool,
    /// Overall limit for applying (including waits between waves) and waiting.
    pub timeout: Duration,
    /// How many objects of one wave are applied at the same time.
    pub concurrency: usize,
    /// When the server rejects a change to an immutable field, delete the object
    /// and create it again (off by default).
    pub recreate_immutable: bool,
    /// Optional readiness rules.
    pub readiness: ReadinessOptions,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            field_manager: DEFAULT_FIELD_MANAGER.to_string(),
            force_conflicts: false,
            dry_run: false,
            wait: false,
            timeout: Duration::from_secs(300),
            concurrency: 16,
            recreate_immutable: false,
            readiness: ReadinessOptions::default(),
        }
    }
}

/// How a kind is reached on the server.
#[derive(Debug, Clone)]
struct Resolved {
    ar: ApiResource,
    namespaced: bool,
}

type GroupVersionResources = Option<Arc<HashMap<String, (String, bool)>>>;

/// Applies manifest bundles to one cluster; caches API discovery between calls.
pub struct ResourceManager {
    client: Client,
    default_namespace: String,
    /// apiVersion -> (kind -> (plural, namespaced)); `None` when not served.
    discovery: Mutex<HashMap<String, GroupVersionResources>>,
}

/// Outcome of applying one object.
struct Applied {
    action: Action,
    error: Option<String>,
    conflicts: Vec<FieldConflict>,
    note: Option<String>,
    /// The object as the server returned it (for readiness).
    live: Option<Value>,
    generation: Option<i64>,
}

impl Applied {
    fn failed(error: String) -> Self {
        Applied {
            action: Action::Failed,
            error: Some(error),
            conflicts: Vec::new(),
            note: None,
            live: None,
            generation: None,
        }
    }
}

/// Something to wait for.
struct Target {
    index: usize,
    id: ObjectRef,
    ar: ApiResource,
    generation: Option<i64>,
}

type Sink<'a> = &'a (dyn Fn(ApplyEvent) + Send + Sync);

impl ResourceManager {
    /// A manager for `client`; namespaced objects without a namespace go to `default_namespace`.
    pub fn new(client: Client, default_namespace: impl Into<String>) -> Self {
        ResourceManager {
            client,
            default_namespace: default_namespace.into(),
            discovery: Mutex::new(HashMap::new()),
        }
    }

    /// The client this manager uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Forgets cached discovery for one apiVersion (or all with `None`).
    pub fn invalidate_discovery(&self, api_version: Option<&str>) {
        if let Ok(mut cache) = self.discovery.lock() {
            match api_version {
                Some(v) => {
                    cache.remove(v);
                }
                None => cache.clear(),
            }
        }
    }

    async fn discover(&self, api_version: &str) -> Result<GroupVersionResources, ApplyError> {
        if let Ok(cache) = self.discovery.lock()
            && let Some(hit) = cache.get(api_version)
        {
            return Ok(hit.clone());
        }
        let result = if api_version.contains('/') {
            self.client.list_api_group_resources(api_version).await
        } else {
            self.client.list_core_api_resources(api_version).await
        };
        let entry = match result {
            Ok(list) => {
                let map: HashMap<String, (String, bool)> = list
                    .resources
                    .into_iter()
                    .filter(|r| !r.name.contains('/'))
                    .map(|r| (r.kind, (r.name, r.namespaced)))
                    .collect();
                Some(Arc::new(map))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(source) => {
                tracing::debug!(api_version, error = %source, "discovery failed");
                return Err(ApplyError::Discovery {
                    api_version: api_version.to_string(),
                    source,
                });
            }
        };
        tracing::debug!(
            api_version,
            kinds = entry.as_ref().map_or(0, |m| m.len()),
            served = entry.is_some(),
            "discovered"
        );
        // "Not served" is not cached: a CRD may be created at any moment.
        if entry.is_some()
            && let Ok(mut cache) = self.discovery.lock()
        {
            cache.insert(api_version.to_string(), entry.clone());
        }
        Ok(entry)
    }

    /// Applies a bundle: resolve, order into waves, server-side apply each
    /// wave concurrently, wait between waves for what later waves need, and
    /// with [`ApplyOptions::wait`] wait until everything is ready.
    ///
    /// Returns the report when every object applied (and, when waiting, became
    /// ready); otherwise [`ApplyError::Failed`] or [`ApplyError::Timeout`]
    /// carrying the report.
    pub async fn apply(
        &self,
        mut manifests: Vec<Manifest>,
        opts: &ApplyOptions,
        progress: Sink<'_>,
    ) -> Result<ApplyReport, ApplyError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut ids = Vec::with_capacity(manifests.len());
        for m in &manifests {
            ids.push(ObjectRef::from_manifest(m)?);
        }

        // Kinds defined by CRDs in this bundle: resolved from the CRD itself.
        let mut bundle_kinds: HashMap<(String, String, String), Resolved> = HashMap::new();
        let mut defines: Vec<Option<(String, String)>> = vec![None; manifests.len()];
        for (i, m) in manifests.iter().enumerate() {
            if ids[i].group == "apiextensions.k8s.io" && ids[i].kind == "CustomResourceDefinition" {
                let crd = crd_kinds(&m.object).ok_or_else(|| ApplyError::InvalidManifest {
                    origin: m.source.clone(),
                    message: "CustomResourceDefinition lacks spec.group, spec.names.kind/plural or spec.versions".into(),
                })?;
                defines[i] = Some((crd.group.clone(), crd.kind.clone()));
                for v in &crd.versions {
                    let gvk = kube::core::GroupVersionKind::gvk(&crd.group, v, &crd.kind);
                    bundle_kinds.insert(
                        (crd.group.clone(), v.clone(), crd.kind.clone()),
                        Resolved {
                            ar: ApiResource::from_gvk_with_plural(&gvk, &crd.plural),
                            namespaced: crd.namespaced,
                        },
                    );
                }
            }
        }

        // Everything else through discovery, one request per group/version, concurrently.
        let mut wanted: Vec<String> = ids
            .iter()
            .filter(|id| {
                !bundle_kinds.contains_key(&(id.group.clone(), id.version.clone(), id.kind.clone()))
            })
            .map(ObjectRef::api_version)
            .collect();
        wanted.sort();
        wanted.dedup();
        let found: Vec<(String, GroupVersionResources)> = futures::stream::iter(wanted)
            .map(|gv| async move { self.discover(&gv).await.map(|r| (gv, r)) })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let found: HashMap<String, GroupVersionResources> = found.into_iter().collect();
        let mut resolved = Vec::with_capacity(manifests.len());
        for (i, id) in ids.iter().enumerate() {
            let key = (id.group.clone(), id.version.clone(), id.kind.clone());
            let r = match bundle_kinds.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let api_version = id.api_version();
                    let hit = found
                        .get(&api_version)
                        .and_then(|gv| gv.as_ref())
                        .and_then(|gv| gv.get(&id.kind).cloned());
                    let Some((plural, namespaced)) = hit else {
                        return Err(ApplyError::UnknownKind {
                            origin: manifests[i].source.clone(),
                            kind: id.kind.clone(),
                            api_version,
                        });
                    };
                    let gvk = kube::core::GroupVersionKind::gvk(&id.group, &id.version, &id.kind);
                    Resolved {
                        ar: ApiResource::from_gvk_with_plural(&gvk, &plural),
                        namespaced,
                    }
                }
            };
            resolved.push(r);
        }

        // Namespaces: fill for namespaced kinds, drop for cluster-scoped ones.
        for (i, m) in manifests.iter_mut().enumerate() {
            m.object
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .map(|meta| meta.remove("managedFields"));
            if resolved[i].namespaced {
                if ids[i].namespace.is_none() {
                    ids[i].namespace = Some(self.default_namespace.clone());
                    if let Some(meta) = m.object.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        meta.insert(
                            "namespace".into(),
                            Value::String(self.default_namespace.clone()),
                        );
                    }
                }
            } else if ids[i].namespace.is_some() {
                ids[i].namespace = None;
                if let Some(meta) = m.object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("namespace");
                }
            }
        }
        let mut seen: HashMap<(&str, &str, Option<&str>, &str), usize> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            let key = (
                id.group.as_str(),
                id.kind.as_str(),
                id.namespace.as_deref(),
                id.name.as_str(),
            );
            if let Some(&j) = seen.get(&key) {
                return Err(ApplyError::Duplicate {
                    object: id.to_string(),
                    first: manifests[j].source.clone(),
                    second: manifests[i].source.clone(),
                });
            }
            seen.insert(key, i);
        }

        let nodes: Vec<Node> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: id.clone(),
                source: manifests[i].source.clone(),
                depends_on: manifests[i]
                    .annotation(DEPENDS_ON_ANNOTATION)
                    .map(str::to_string),
                defines: defines[i].clone(),
            })
            .collect();
        let plan = plan::plan(&nodes)?;
        drop(nodes);
        progress(ApplyEvent::Planned {
            objects: manifests.len(),
            waves: plan.waves.len(),
        });

        let mut report = ApplyReport {
            objects: ids
                .iter()
                .zip(&manifests)
                .map(|(id, m)| ObjectResult {
                    object: id.clone(),
                    source: m.source.clone(),
                    wave: 0,
                    action: Action::Skipped,
                    error: None,
                    conflicts: Vec::new(),
                    status: Status::NotChecked,
                    diagnostics: Vec::new(),
                    note: None,
                })
                .collect(),
            dry_run: opts.dry_run,
            waves: plan.waves.len(),
            apply_millis: 0,
            wait_millis: 0,
        };
        for (w, wave) in plan.waves.iter().enumerate() {
            for &i in wave {
                report.objects[i].wave = w;
            }
        }

        // Readiness known so far, and the generation our apply produced.
        let mut state: Vec<Option<Readiness>> = vec![None; manifests.len()];
        let mut generations: Vec<Option<i64>> = vec![None; manifests.len()];
        // Dry run: objects the bundle would create that the server cannot check dependents against.
        let mut would_create: HashSet<usize> = HashSet::new();

        for (w, wave) in plan.waves.iter().enumerate() {
            progress(ApplyEvent::WaveStarted {
                wave: w,
                objects: wave.len(),
            });
            let manifests_ref = &manifests;
            let resolved_ref = &resolved;
            let ids_ref = &ids;
            let plan_ref = &plan;
            let would_create_ref = &would_create;
            let results: Vec<(usize, Applied)> = futures::stream::iter(wave.iter().copied())
                .map(|i| async move {
                    if opts.dry_run
                        && let Some(&d) = plan_ref.deps[i]
                            .iter()
                            .find(|d| would_create_ref.contains(d))
                    {
                        let note = format!(
                            "not checked on the server: {} is created by this bundle",
                            ids_ref[d]
                        );
                        progress(ApplyEvent::Applied {
                            object: ids_ref[i].clone(),
                            action: Action::Created,
                            error: None,
                        });
                        return (
                            i,
                            Applied {
                                action: Action::Created,
                                error: None,
                                conflicts: Vec::new(),
                                note: Some(note),
                                live: None,
                                generation: None,
                            },
                        );
                    }
                    let one = self.apply_one(
                        &manifests_ref[i].object,
                        &ids_ref[i],
                        &resolved_ref[i].ar,
                        opts,
                        progress,
                    );
                    let out = match tokio::time::timeout_at(deadline, one).await {
                        Ok(out) => out,
                        Err(_) => Applied::failed(format!(
                            "no answer from the API server within the timeout ({})",
                            super::report::humanize(opts.timeout)
                        )),
                    };
                    progress(ApplyEvent::Applied {
                        object: ids_ref[i].clone(),
                        action: out.action,
                        error: out.error.clone(),
                    });
                    (i, out)
                })
                .buffer_unordered(opts.concurrency.max(1))
                .collect()
                .await;
            let mut failed = false;
            for (i, a) in results {
                if a.action == Action::Failed {
                    failed = true;
                }
                if opts.dry_run && a.action == Action::Created && plan.gates[i] {
                    would_create.insert(i);
                }
                if let Some(live) = &a.live {
                    state[i] = Some(readiness::readiness(live, a.generation, &opts.readiness));
                }
                generations[i] = a.generation;
                let r = &mut report.objects[i];
                r.action = a.action;
                r.error = a.error;
                r.conflicts = a.conflicts;
                r.note = a.note;
            }
            // A CRD applied: its group's cached discovery is stale.
            for &i in wave {
                if let Some((g, _)) = &defines[i]
                    && matches!(
                        report.objects[i].action,
                        Action::Created | Action::Configured | Action::Recreated
                    )
                    && let Ok(mut cache) = self.discovery.lock()
                {
                    cache.retain(|k, _| !k.starts_with(&format!("{g}/")));
                }
            }
            if failed {
                mark_skipped(&mut report, &plan.waves[w + 1..]);
                report.apply_millis = started.elapsed().as_millis() as u64;
                return Err(ApplyError::Failed {
                    report: Box::new(report),
                });
            }
            if opts.dry_run || w + 1 == plan.waves.len() {
                continue;
            }
            // Gates: what later waves need before they start.
            let gates: Vec<Target> = wave
                .iter()
                .copied()
                .filter(|&i| plan.gates[i] && !state[i].as_ref().is_some_and(Readiness::is_ready))
                .map(|i| Target {
                    index: i,
                    id: ids[i].clone(),
                    ar: resolved[i].ar.clone(),
                    generation: generations[i],
                })
                .collect();
            for &i in wave {
                if plan.gates[i] && state[i].as_ref().is_some_and(Readiness::is_ready) {
                    report.objects[i].status = Status::Ready;
                }
            }
            if !gates.is_empty() {
                let done = self
                    .wait_targets(&gates, &state, deadline, opts, progress)
                    .await;
                let mut trouble = false;
                let mut is_failure = false;
                for (t, r) in gates.iter().zip(done) {
                    report.objects[t.index].status = to_status(&r);
                    trouble |= !r.is_ready();
                    is_failure |= r.is_failed();
                    state[t.index] = Some(r);
                }
                if trouble {
                    mark_skipped(&mut report, &plan.waves[w + 1..]);
                    self.add_diagnostics(&mut report, &resolved).await;
                    report.apply_millis = started.elapsed().as_millis() as u64;
                    return Err(if is_failure || tokio::time::Instant::now() < deadline {
                        ApplyError::Failed {
                            report: Box::new(report),
                        }
                    } else {
                        ApplyError::Timeout {
                            timeout: opts.timeout,
                            report: Box::new(report),
                        }
                    });
                }
            }
            // New CRDs are established now: drop what discovery cached meanwhile.
            for &i in wave {
                if let Some((g, _)) = &defines[i]
                    && let Ok(mut cache) = self.discovery.lock()
                {
                    cache.retain(|k, _| !k.starts_with(&format!("{g}/")));
                }
            }
        }
        report.apply_millis = started.elapsed().as_millis() as u64;
        if !opts.wait || opts.dry_run {
            return Ok(report);
        }

        let wait_started = Instant::now();
        let mut targets = Vec::new();
        for i in 0..manifests.len() {
            match &state[i] {
                Some(Readiness::Ready) => report.objects[i].status = Status::Ready,
                Some(Readiness::Failed(r)) => report.objects[i].status = Status::Failed(r.clone()),
                _ => targets.push(Target {
                    index: i,
                    id: ids[i].clone(),
                    ar: resolved[i].ar.clone(),
                    generation: generations[i],
                }),
            }
        }
        drop(manifests);
        if !targets.is_empty() {
            progress(ApplyEvent::Waiting {
                objects: targets.len(),
            });
            let done = self
                .wait_targets(&targets, &state, deadline, opts, progress)
                .await;
            for (t, r) in targets.iter().zip(done) {
                report.objects[t.index].status = to_status(&r);
            }
        }
        report.wait_millis = wait_started.elapsed().as_millis() as u64;
        let failed = report.failed().count() > 0;
        let not_ready = report.not_ready().count() > 0;
        if failed || not_ready {
            self.add_diagnostics(&mut report, &resolved).await;
        }
        if failed {
            Err(ApplyError::Failed {
                report: Box::new(report),
            })
        } else if not_ready {
            Err(ApplyError::Timeout {
                timeout: opts.timeout,
                report: Box::new(report),
            })
        } else {
            Ok(report)
        }
    }

    async fn add_diagnostics(&self, report: &mut ApplyReport, resolved: &[Resolved]) {
        let wanted: Vec<usize> = report
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.status, Status::NotReady(_) | Status::Failed(_)))
            .map(|(i, _)| i)
            .collect();
        let found: Vec<(usize, Vec<String>)> = futures::stream::iter(wanted)
            .map(|i| {
                let id = report.objects[i].object.clone();
                let ar = resolved[i].ar.clone();
                async move { (i, diagnose::diagnose(&self.client, &id, &ar).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (i, d) in found {
            report.objects[i].diagnostics = d;
        }
    }

    /// Server-side applies one object and tells what it did.
    async fn apply_one(
        &self,
        object: &Value,
        id: &ObjectRef,
        ar: &ApiResource,
        opts: &ApplyOptions,
        progress: Sink<'_>,
    ) -> Applied {
        let request = Request::new(DynamicObject::url_path(ar, id.namespace.as_deref()));
        let params = PatchParams {
            dry_run: opts.dry_run,
            force: opts.force_conflicts,
            field_manager: Some(opts.field_manager.clone()),
            field_validation: None,
        };
        // What is there now: its resourceVersion (the whole object in a dry run).
        // Outside a dry run only a slim view of objects is kept (no spec of a
        // CRD, no managedFields): big objects cost no memory beyond parsing.
        let before: Result<Option<Existing>, kube::Error> = if opts.dry_run {
            self.get::<Value>(&request, &id.name, false)
                .await
                .map(|o| o.map(Existing::Full))
        } else {
            self.get::<Slim>(&request, &id.name, true)
                .await
                .map(|o| o.map(|s| Existing::Slim(Box::new(s))))
        };
        let before = match before {
            Ok(b) => b,
            Err(e) => {
                return Applied::failed(format!(
                    "cannot read the live object: {}",
                    api_error_text(&e)
                ));
            }
        };
        let mut conflicts = Vec::new();
        if opts.dry_run && opts.force_conflicts && before.is_some() {
            // Which fields forcing would take over: a dry run without force reports them.
            let unforced = PatchParams {
                force: false,
                ..params.clone()
            };
            if let Err(kube::Error::Api(s)) = self
                .patch::<serde::de::IgnoredAny>(&request, &id.name, &unforced, object)
                .await
                && s.code == 409
            {
                conflicts = parse_conflicts(&s);
            }
        }
        let mut recreated = false;
        let result = match self
            .patch_any(&request, &id.name, &params, object, opts.dry_run)
            .await
        {
            Err(kube::Error::Api(s))
                if s.code == 422 && is_immutable(&s) && opts.recreate_immutable =>
            {
                progress(ApplyEvent::Recreating {
                    object: id.clone(),
                    reason: s.message.clone(),
                });
                recreated = true;
                if opts.dry_run {
                    return Applied {
                        action: Action::Recreated,
                        error: None,
                        conflicts,
                        note: Some(format!("would be deleted and created again: {}", s.message)),
                        live: None,
                        generation: None,
                    };
                }
                match self.delete_and_wait(&request, id, ar).await {
                    Ok(()) => {
                        self.patch_any(&request, &id.name, &params, object, false)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let after = match result {
            Ok(v) => v,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let conflicts = parse_conflicts(&s);
                let owners: Vec<String> = conflicts
                    .iter()
                    .map(|c| format!("{:?} owns {}", c.manager, c.fields.join(", ")))
                    .collect();
                let mut a = Applied::failed(format!(
                    "{}conflict with other field managers: {}; pass --force-conflicts to take these fields over, or remove them from the manifest",
                    if opts.dry_run { "would fail: " } else { "" },
                    if owners.is_empty() {
                        s.message.clone()
                    } else {
                        owners.join("; ")
                    }
                ));
                a.conflicts = conflicts;
                return a;
            }
            Err(kube::Error::Api(s)) if s.code == 422 && is_immutable(&s) => {
                return Applied::failed(format!(
                    "the change touches an immutable field: {}; delete the object first, or pass --recreate-immutable to let tendril delete and create it again",
                    s.message
                ));
            }
            Err(kube::Error::Api(s))
                if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces") =>
            {
                return Applied::failed(format!(
                    "namespace {} does not exist: create it or add its Namespace to the bundle ({})",
                    id.namespace.as_deref().unwrap_or(""),
                    s.message
                ));
            }
            Err(e) => {
                return Applied::failed(format!("the server rejected it: {}", api_error_text(&e)));
            }
        };
        let (generation, action, live) = match (before, after) {
            (before, Existing::Full(mut after)) => {
                let generation = after
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64);
                let action = match before {
                    _ if recreated => Action::Recreated,
                    None => Action::Created,
                    Some(Existing::Full(mut before)) => {
                        strip_volatile(&mut before);
                        strip_volatile(&mut after);
                        if before == after {
                            Action::Unchanged
                        } else {
                            Action::Configured
                        }
                    }
                    Some(Existing::Slim(_)) => Action::Configured,
                };
                (generation, action, None)
            }
            (before, Existing::Slim(after)) => {
                let generation = after.metadata.generation;
                let action = match before {
                    _ if recreated => Action::Recreated,
                    None => Action::Created,
                    Some(Existing::Slim(before)) => {
                        let old = before.metadata.resource_version;
                        if old.is_some() && old == after.metadata.resource_version {
                            Action::Unchanged
                        } else {
                            Action::Configured
                        }
                    }
                    Some(Existing::Full(_)) => Action::Configured,
                };
                (generation, action, Some(after.into_value()))
            }
        };
        Applied {
            action,
            error: None,
            conflicts,
            note: None,
            generation,
            live,
        }
    }

    /// Applies and parses the answer fully (dry run: for comparison) or slimly.
    async fn patch_any(
        &self,
        request: &Request,
        name: &str,
        params: &PatchParams,
        object: &Value,
        full: bool,
    ) -> Result<Existing, kube::Error> {
        if full {
            self.patch::<Value>(request, name, params, object)
                .await
                .map(Existing::Full)
        } else {
            self.patch::<Slim>(request, name, params, object)
                .await
                .map(|s| Existing::Slim(Box::new(s)))
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
        name: &str,
        metadata_only: bool,
    ) -> Result<Option<T>, kube::Error> {
        let gp = GetParams::default();
        let req = if metadata_only {
            request.get_metadata(name, &gp)
        } else {
            request.get(name, &gp)
        }
        .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<T>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn patch<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
        name: &str,
        params: &PatchParams,
        object: &Value,
    ) -> Result<T, kube::Error> {
        let req = request
            .patch(name, params, &Patch::Apply(object))
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<T>(req).await
    }

    async fn delete_and_wait(
        &self,
        request: &Request,
        id: &ObjectRef,
        ar: &ApiResource,
    ) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let req = request
            .delete(&id.name, &dp)
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Value>(req).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
        let api = watched_api(&self.client, ar, id.namespace.as_deref());
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", id.name));
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut present = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => present = false,
                Ok(Event::InitApply(o)) | Ok(Event::Apply(o))
                    if o.meta.name.as_deref() == Some(&id.name) =>
                {
                    present = true
                }
                Ok(Event::Delete(o)) if o.meta.name.as_deref() == Some(&id.name) => {
                    return Ok(());
                }
                Ok(Event::InitDone) if !present => return Ok(()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits until each target is ready or failed, or the deadline passes;
    /// returns the last readiness of each target.
    async fn wait_targets(
        &self,
        targets: &[Target],
        state: &[Option<Readiness>],
        deadline: tokio::time::Instant,
        opts: &ApplyOptions,
        progress: Sink<'_>,
    ) -> Vec<Readiness> {
        let last: Arc<Mutex<Vec<Readiness>>> = Arc::new(Mutex::new(
            targets
                .iter()
                .map(|t| {
                    state[t.index]
                        .clone()
                        .unwrap_or_else(|| Readiness::InProgress("not observed yet".into()))
                })
                .collect(),
        ));
        if let Ok(l) = last.lock() {
            for (t, r) in targets.iter().zip(l.iter()) {
                if let Readiness::InProgress(reason) = r {
                    progress(ApplyEvent::Progress {
                        object: t.id.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        tracing::debug!(
            objects = targets.len(),
            "waiting for readiness until the deadline"
        );
        let watches = targets.iter().enumerate().map(|(k, t)| {
            let last = last.clone();
            async move {
                tracing::debug!(object = %t.id, "watching for readiness");
                let api = watched_api(&self.client, &t.ar, t.id.namespace.as_deref());
                let cfg =
                    watcher::Config::default().fields(&format!("metadata.name={}", t.id.name));
                let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
                let mut seen = false;
                while let Some(ev) = stream.next().await {
                    let r = match ev {
                        Ok(Event::Init) => {
                            seen = false;
                            continue;
                        }
                        Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                            if o.meta.name.as_deref() != Some(&t.id.name) {
                                continue;
                            }
                            seen = true;
                            // List items carry no apiVersion/kind on a real server: use ours.
                            let mut o = o;
                            o.slim.api_version.clone_from(&t.ar.api_version);
                            o.slim.kind.clone_from(&t.ar.kind);
                            readiness::readiness(&o.into_value(), t.generation, &opts.readiness)
                        }
                        Ok(Event::Delete(o)) if o.meta.name.as_deref() == Some(&t.id.name) => {
                            Readiness::InProgress("the object was deleted".into())
                        }
                        Ok(Event::InitDone) if !seen => {
                            Readiness::InProgress("the object does not exist".into())
                        }
                        Ok(_) => continue,
                        Err(e) => Readiness::InProgress(format!("watch failed: {e}")),
                    };
                    let changed = match last.lock() {
                        Ok(mut l) => {
                            let changed = l[k] != r;
                            l[k] = r.clone();
                            changed
                        }
                        Err(_) => true,
                    };
                    match &r {
                        Readiness::Ready => {
                            progress(ApplyEvent::Ready {
                                object: t.id.clone(),
                            });
                            return;
                        }
                        Readiness::Failed(reason) => {
                            progress(ApplyEvent::NotReady {
                                object: t.id.clone(),
                                reason: reason.clone(),
                            });
                            return;
                        }
                        Readiness::InProgress(reason) if changed => {
                            progress(ApplyEvent::Progress {
                                object: t.id.clone(),
                                reason: reason.clone(),
                            })
                        }
                        Readiness::InProgress(_) => {}
                    }
                }
            }
        });
        let _ = tokio::time::timeout_at(deadline, futures::future::join_all(watches)).await;
        match last.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn watched_api(client: &Client, ar: &ApiResource, namespace: Option<&str>) -> Api<Watched> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

fn to_status(r: &Readiness) -> Status {
    match r {
        Readiness::Ready => Status::Ready,
        Readiness::InProgress(s) => Status::NotReady(s.clone()),
        Readiness::Failed(s) => Status::Failed(s.clone()),
    }
}

fn mark_skipped(report: &mut ApplyReport, later: &[Vec<usize>]) {
    for wave in later {
        for &i in wave {
            report.objects[i].action = Action::Skipped;
            report.objects[i].error =
                Some("not applied: an earlier wave failed or was not ready".into());
        }
    }
}

/// A watched object: the slim view, as a kube [`Resource`] for the watcher.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(from = "Slim")]
struct Watched {
    slim: Slim,
    /// Name, namespace and resourceVersion (the watcher resumes from it).
    meta: kube::api::ObjectMeta,
}

impl From<Slim> for Watched {
    fn from(slim: Slim) -> Self {
        let meta = kube::api::ObjectMeta {
            name: Some(slim.metadata.name.clone()),
            namespace: slim.metadata.namespace.clone(),
            resource_version: slim.metadata.resource_version.clone(),
            generation: slim.metadata.generation,
            ..Default::default()
        };
        Watched { slim, meta }
    }
}

impl Watched {
    fn into_value(self) -> Value {
        self.slim.into_value()
    }
}

impl Resource for Watched {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &kube::api::ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        &mut self.meta
    }
}

/// An object as read or returned by the server.
enum Existing {
    /// Everything (dry runs compare whole objects).
    Full(Value),
    /// What readiness and change detection need.
    Slim(Box<Slim>),
}

/// The parts of an object readiness rules and change detection read; the
/// rest (a CRD's schema, managedFields, ...) is skipped while parsing.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct Slim {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: SlimMeta,
    spec: SlimSpec,
    status: Value,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SlimMeta {
    name: String,
    namespace: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SlimSpec {
    replicas: Option<i64>,
    update_strategy: Option<Value>,
    #[serde(rename = "type")]
    service_type: Option<String>,
}

impl Slim {
    fn into_value(self) -> Value {
        let mut meta = serde_json::Map::new();
        meta.insert("name".into(), Value::String(self.metadata.name));
        if let Some(g) = self.metadata.generation {
            meta.insert("generation".into(), g.into());
        }
        if let Some(d) = self.metadata.deletion_timestamp {
            meta.insert("deletionTimestamp".into(), Value::String(d));
        }
        let mut spec = serde_json::Map::new();
        if let Some(r) = self.spec.replicas {
            spec.insert("replicas".into(), r.into());
        }
        if let Some(u) = self.spec.update_strategy {
            spec.insert("updateStrategy".into(), u);
        }
        if let Some(t) = self.spec.service_type {
            spec.insert("type".into(), Value::String(t));
        }
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": meta,
            "spec": spec,
            "status": self.status,
        })
    }
}

/// Removes what changes on every write but says nothing about content.
fn strip_volatile(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
}

struct CrdKinds {
    group: String,
    kind: String,
    plural: String,
    namespaced: bool,
    versions: Vec<String>,
}

fn crd_kinds(crd: &Value) -> Option<CrdKinds> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let kind = spec.pointer("/names/kind")?.as_str()?.to_string();
    let plural = spec.pointer("/names/plural")?.as_str()?.to_string();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let versions: Vec<String> = spec
        .get("versions")?
        .as_array()?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if versions.is_empty() {
        return None;
    }
    Some(CrdKinds {
        group,
        kind,
        plural,
        namespaced,
        versions,
    })
}

fn is_immutable(s: &kube::core::Status) -> bool {
    let mut texts = vec![s.message.as_str()];
    if let Some(d) = &s.details {
        texts.extend(d.causes.iter().map(|c| c.message.as_str()));
    }
    texts
        .iter()
        .any(|t| t.contains("immutable") || t.contains("may not change once set"))
}

/// Conflicts from a 409 apply response: causes carry `conflict with "manager" ...` and the field.
pub(crate) fn parse_conflicts(s: &kube::core::Status) -> Vec<FieldConflict> {
    let mut out: Vec<FieldConflict> = Vec::new();
    fn add(out: &mut Vec<FieldConflict>, manager: String, field: Option<String>) {
        let p = match out.iter().position(|c| c.manager == manager) {
            Some(p) => p,
            None => {
                out.push(FieldConflict {
                    manager,
                    fields: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let Some(f) = field
            && !out[p].fields.contains(&f)
        {
            out[p].fields.push(f);
        }
    }
    let causes = s
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or(&[]);
    for c in causes {
        if let Some(m) = quoted(&c.message) {
            let field = (!c.field.is_empty()).then(|| c.field.clone());
            add(&mut out, m, field);
        }
    }
    if causes.is_empty() {
        // Only the message: `... conflict with "mgr" using v1: .spec.x` (one manager per line).
        for line in s.message.lines() {
            if let Some(m) = quoted(line) {
                let field = line
                    .rsplit_once(": ")
                    .map(|(_, f)| f.trim().to_string())
                    .filter(|f| f.starts_with('.'));
                add(&mut out, m, field);
            } else if let Some(f) = line.trim().strip_prefix("- ")
                && let Some(last) = out.last().map(|c| c.manager.clone())
            {
                add(&mut out, last, Some(f.to_string()));
            }
        }
    }
    out
}

fn quoted(text: &str) -> Option<String> {
    let start = text.find('"')? + 1;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}

fn api_error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let mut t = s.message.clone();
            if !s.reason.is_empty() {
                t.push_str(&format!(" ({}, HTTP {})", s.reason, s.code));
            } else if s.code != 0 {
                t.push_str(&format!(" (HTTP {})", s.code));
            }
            t
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status as KStatus;
    use kube::core::response::{StatusCause, StatusDetails};

    #[test]
    fn conflicts_from_causes() {
        let s = KStatus::failure(
            "Apply failed with 2 conflicts: conflicts with \"kubectl\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"app\"].image",
            "Conflict",
        )
        .with_code(409)
        .with_details(StatusDetails {
            name: "d".into(),
            group: "apps".into(),
            kind: "deployments".into(),
            uid: String::new(),
            causes: vec![
                StatusCause { reason: "FieldManagerConflict".into(), message: "conflict with \"kubectl\" using apps/v1".into(), field: ".spec.replicas".into() },
                StatusCause { reason: "FieldManagerConflict".into(), message: "conflict with \"helm\" using apps/v1".into(), field: ".spec.paused".into() },
            ],
            retry_after_seconds: 0,
        });
        let c = parse_conflicts(&s);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            FieldConflict {
                manager: "kubectl".into(),
                fields: vec![".spec.replicas".into()]
            }
        );
        assert_eq!(c[1].manager, "helm");
    }

    #[test]
    fn conflicts_from_message_only() {
        let s = KStatus::failure(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.key",
            "Conflict",
        )
        .with_code(409);
        let c = parse_conflicts(&s);
        assert_eq!(
            c,
            vec![FieldConflict {
                manager: "kubectl".into(),
                fields: vec![".data.key".into()]
            }]
        );
    }

    #[test]
    fn immutable_messages() {
        let s = KStatus::failure("Deployment.apps \"d\" is invalid: spec.selector: Invalid value: ...: field is immutable", "Invalid").with_code(422);
        assert!(is_immutable(&s));
        let s = KStatus::failure("Service \"s\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.9\"}: may not change once set", "Invalid").with_code(422);
        assert!(is_immutable(&s));
        let s = KStatus::failure("spec.replicas: Invalid value: -1", "Invalid").with_code(422);
        assert!(!is_immutable(&s));
    }

    #[test]
    fn slim_view_keeps_what_readiness_needs() {
        let full = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "generation": 4, "resourceVersion": "77",
                         "managedFields": [{"manager": "x", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
        let slim: Slim = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("77"));
        let v = slim.into_value();
        assert!(v.pointer("/metadata/managedFields").is_none());
        assert!(v.pointer("/spec/template").is_none());
        let o = ReadinessOptions::default();
        assert_eq!(
            readiness::readiness(&v, Some(4), &o),
            readiness::readiness(&full, Some(4), &o)
        );
    }

    #[test]
    fn watched_list_items_without_kind_keep_resource_version() {
        // List items from a real API server carry no apiVersion/kind.
        let item = serde_json::json!({"metadata": {"name": "d", "resourceVersion": "9", "generation": 1},
            "spec": {"replicas": 1}, "status": {"observedGeneration": 1}});
        let w: Watched = serde_json::from_value(item).unwrap();
        assert_eq!(w.meta.resource_version.as_deref(), Some("9"));
        assert_eq!(w.meta.name.as_deref(), Some("d"));
        assert_eq!(w.slim.kind, "");
    }

    #[test]
    fn crd_spec_gives_endpoint() {
        let crd = serde_json::json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true}, {"name": "v0", "served": false}]}});
        let k = crd_kinds(&crd).unwrap();
        assert_eq!(k.versions, vec!["v1"]);
        assert!(k.namespaced);
        assert_eq!(k.plural, "widgets");
    }
}
