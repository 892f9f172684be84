//! The resource manager: resolve, order, read the inventory, apply in
//! stages, prune, record the inventory, wait.

use super::delete;
use super::diagnose;
use super::inventory::{self, ApplySet, Key, LiveMember, Previous, Record};
use super::object::ObjectError;
use super::plan::{self, Node, Plan};
use super::readiness::{Readiness, ReadinessOptions};
use super::report::{Action, ApplyEvent, ApplyReport, ObjectResult, Status};
use super::resolve::{self, Discovery, Object};
use super::staged::{self, Decision, Outcome, Staged};
use super::wait::{self, Target};
use super::{ApplyError, DEPENDS_ON_ANNOTATION, Manifest, Sink};
use futures::StreamExt;
use kube::Client;
use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// Overall limit for applying (including waits for gates), pruning and waiting.
    pub timeout: Duration,
    /// How many applies are in flight at the same time.
    pub concurrency: usize,
    /// When the server rejects a change to an immutable field, delete the object
    /// and create it again (off by default).
    pub recreate_immutable: bool,
    /// Readiness rules beyond the built-in ones.
    pub readiness: ReadinessOptions,
    /// Record the bundle in this apply set (see [`ApplySet`]): re-applies send
    /// only what changed, and pruning becomes possible.
    pub applyset: Option<ApplySet>,
    /// With an apply set: delete the members of the previous apply that this
    /// bundle no longer holds (only when every object applied).
    pub prune: bool,
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
            applyset: None,
            prune: false,
        }
    }
}

/// Applies manifest bundles to one cluster; caches API discovery between calls.
pub struct ResourceManager {
    client: Client,
    default_namespace: String,
    discovery: Discovery,
}

/// The inventory as read before applying.
struct Loaded {
    set: ApplySet,
    previous: Previous,
    live: HashMap<Key, LiveMember>,
}

impl ResourceManager {
    /// A manager for `client`; namespaced objects without a namespace go to `default_namespace`.
    pub fn new(client: Client, default_namespace: impl Into<String>) -> Self {
        ResourceManager {
            client,
            default_namespace: default_namespace.into(),
            discovery: Discovery::default(),
        }
    }

    /// The client this manager uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Forgets cached discovery for one apiVersion (or all with `None`).
    pub fn invalidate_discovery(&self, api_version: Option<&str>) {
        self.discovery.forget(api_version);
    }

    /// Applies a bundle: resolve every kind, order the objects, read the
    /// inventory (with [`ApplyOptions::applyset`]), server-side apply what
    /// changed with every object waiting only for what it needs, prune, record
    /// the inventory, and with [`ApplyOptions::wait`] wait until everything is ready.
    ///
    /// Returns the report when every object applied (and, when waiting, became
    /// ready); otherwise [`ApplyError::Failed`] or [`ApplyError::Timeout`]
    /// carrying the report.
    pub async fn apply(
        &self,
        manifests: Vec<Manifest>,
        opts: &ApplyOptions,
        progress: Sink<'_>,
    ) -> Result<ApplyReport, ApplyError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut objects = resolve::resolve(
            &self.client,
            &self.discovery,
            manifests,
            &self.default_namespace,
            deadline,
        )
        .await?;
        let plan = plan::plan(&nodes(&objects))?;
        let loaded = match &opts.applyset {
            Some(set) => Some(self.load(set, &mut objects, opts, deadline).await?),
            None => None,
        };
        progress(ApplyEvent::Planned {
            objects: objects.len(),
            waves: plan.waves.len(),
        });
        let decisions = decide(&objects, loaded.as_ref(), opts);
        let outcomes = staged::run(&Staged {
            client: &self.client,
            discovery: &self.discovery,
            objects: &objects,
            plan: &plan,
            decisions: &decisions,
            opts,
            deadline,
            progress,
        })
        .await;
        let mut report = report_of(&objects, &plan, &outcomes, opts.dry_run);
        let failure = failure_of(&objects, &plan, &outcomes);
        if let Some(loaded) = &loaded {
            let pruned = if opts.prune && failure.is_none() {
                self.prune(loaded, &objects, opts, deadline, progress, &mut report)
                    .await
            } else {
                HashSet::new()
            };
            let records = records_after(loaded, &objects, &decisions, &outcomes, &pruned, opts);
            self.record(loaded, &records, opts, deadline).await?;
        }
        report.apply_millis = started.elapsed().as_millis() as u64;
        let prune_failed = report.objects.iter().any(|o| o.action == Action::Failed);
        if failure.is_some() || prune_failed {
            let ars: Vec<_> = objects.iter().map(|o| o.ar.clone()).collect();
            self.add_diagnostics(&mut report, &ars).await;
            let timed_out = matches!(failure, Some(Failure::NotReady))
                && tokio::time::Instant::now() >= deadline;
            return Err(if timed_out {
                ApplyError::Timeout {
                    timeout: opts.timeout,
                    report: Box::new(report),
                }
            } else {
                ApplyError::Failed {
                    report: Box::new(report),
                }
            });
        }
        if !opts.wait || opts.dry_run {
            return Ok(report);
        }
        self.wait_ready(&objects, &outcomes, &mut report, opts, deadline, progress)
            .await
    }

    /// Reads the inventory, labels the members, lists them, and widens the
    /// parent's group-kinds before anything new is applied.
    async fn load(
        &self,
        set: &ApplySet,
        objects: &mut [Object],
        opts: &ApplyOptions,
        deadline: tokio::time::Instant,
    ) -> Result<Loaded, ApplyError> {
        let previous = inventory::read(&self.client, set, deadline).await?;
        if !previous.exists {
            inventory::check_namespace(&self.client, set, objects, deadline).await?;
        }
        let id = set.id();
        for o in objects.iter_mut() {
            inventory::label_member(&mut o.manifest.object, &id);
        }
        let live = if previous.exists {
            inventory::list_members(
                &self.client,
                &self.discovery,
                set,
                &previous,
                &opts.field_manager,
                deadline,
            )
            .await?
        } else {
            HashMap::new()
        };
        let wanted: BTreeSet<String> = objects
            .iter()
            .map(|o| inventory::group_kind(&o.id.group, &o.id.kind))
            .collect();
        if previous.exists && !opts.dry_run && !wanted.is_subset(&previous.group_kinds) {
            // KEP-3659: the parent lists every kind before members of it exist.
            let kept: Vec<Record> = previous.records.values().cloned().collect();
            let mut union = previous.group_kinds.clone();
            union.extend(wanted);
            inventory::write(
                &self.client,
                set,
                &kept,
                &union,
                &opts.field_manager,
                deadline,
            )
            .await?;
        }
        Ok(Loaded {
            set: set.clone(),
            previous,
            live,
        })
    }

    /// Rewrites the parent with the member records after this apply, unless
    /// nothing changed (or it is a dry run).
    async fn record(
        &self,
        loaded: &Loaded,
        records: &[Record],
        opts: &ApplyOptions,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApplyError> {
        let previous = &loaded.previous;
        let same = previous.exists
            && records.len() == previous.records.len()
            && records
                .iter()
                .all(|r| previous.records.get(&inventory::key_of(&r.id())) == Some(r));
        if opts.dry_run || same {
            return Ok(());
        }
        inventory::write(
            &self.client,
            &loaded.set,
            records,
            &BTreeSet::new(),
            &opts.field_manager,
            deadline,
        )
        .await?;
        Ok(())
    }

    /// Deletes the live members the bundle no longer holds, in reverse
    /// dependency order (each stage's deletes acknowledged before the next
    /// stage's are sent; finalizers are left to their controllers); their keys.
    async fn prune(
        &self,
        loaded: &Loaded,
        objects: &[Object],
        opts: &ApplyOptions,
        deadline: tokio::time::Instant,
        progress: Sink<'_>,
        report: &mut ApplyReport,
    ) -> HashSet<Key> {
        let keep: HashSet<Key> = objects.iter().map(staged::key).collect();
        let mut gone: Vec<&LiveMember> = loaded
            .live
            .iter()
            .filter(|(k, _)| !keep.contains(*k))
            .map(|(_, m)| m)
            .collect();
        gone.sort_by_key(|m| {
            (
                std::cmp::Reverse(plan::stage(&m.id.group, &m.id.kind)),
                m.id.clone(),
            )
        });
        let mut pruned = HashSet::new();
        let source = format!("apply set {}", loaded.set.name());
        let mut stages: Vec<Vec<&LiveMember>> = Vec::new();
        for m in gone {
            let s = plan::stage(&m.id.group, &m.id.kind);
            match stages.last_mut() {
                Some(last) if plan::stage(&last[0].id.group, &last[0].id.kind) == s => last.push(m),
                _ => stages.push(vec![m]),
            }
        }
        for stage in stages {
            let results: Vec<(&LiveMember, Result<(), kube::Error>)> = futures::stream::iter(stage)
                .map(|m| async move {
                    if opts.dry_run {
                        return (m, Ok(()));
                    }
                    (
                        m,
                        delete::delete(&self.client, &m.ar, &m.id, deadline)
                            .await
                            .map(drop),
                    )
                })
                .buffer_unordered(opts.concurrency.max(1))
                .collect()
                .await;
            for (m, r) in results {
                let (action, error) = match r {
                    Ok(()) => {
                        pruned.insert(inventory::key_of(&m.id));
                        (Action::Pruned, None)
                    }
                    Err(e) => (
                        Action::Failed,
                        Some(ObjectError::Delete(super::request::error_text(&e))),
                    ),
                };
                progress(ApplyEvent::Applied {
                    object: m.id.clone(),
                    action,
                    error: error.clone(),
                });
                report.objects.push(ObjectResult {
                    object: m.id.clone(),
                    source: source.clone(),
                    wave: 0,
                    action,
                    error,
                    conflicts: Vec::new(),
                    status: Status::NotChecked,
                    diagnostics: Vec::new(),
                    note: opts.dry_run.then(|| "would be deleted".to_string()),
                });
            }
        }
        pruned
    }

    /// Waits until every applied object is ready (those known ready are not watched).
    async fn wait_ready(
        &self,
        objects: &[Object],
        outcomes: &[Outcome],
        report: &mut ApplyReport,
        opts: &ApplyOptions,
        deadline: tokio::time::Instant,
        progress: Sink<'_>,
    ) -> Result<ApplyReport, ApplyError> {
        let wait_started = Instant::now();
        let mut targets = Vec::new();
        let mut indexes = Vec::new();
        for (i, (o, out)) in objects.iter().zip(outcomes).enumerate() {
            match &out.readiness {
                Some(Readiness::Ready) => report.objects[i].status = Status::Ready,
                Some(Readiness::Failed(r)) => report.objects[i].status = Status::Failed(r.clone()),
                known => {
                    indexes.push(i);
                    targets.push(Target {
                        id: o.id.clone(),
                        ar: o.ar.clone(),
                        generation: out.live.as_ref().and_then(|l| l.generation()),
                        last: known
                            .clone()
                            .unwrap_or_else(|| Readiness::InProgress("not observed yet".into())),
                    });
                }
            }
        }
        if !targets.is_empty() {
            progress(ApplyEvent::Waiting {
                objects: targets.len(),
            });
            let done =
                wait::wait_all(&self.client, &targets, deadline, &opts.readiness, progress).await;
            for (i, r) in indexes.into_iter().zip(done) {
                report.objects[i].status = to_status(&r);
            }
        }
        report.wait_millis = wait_started.elapsed().as_millis() as u64;
        let failed = report.failed().count() > 0;
        let not_ready = report.not_ready().count() > 0;
        if failed || not_ready {
            let ars: Vec<_> = objects.iter().map(|o| o.ar.clone()).collect();
            self.add_diagnostics(report, &ars).await;
        }
        let report = std::mem::take(report);
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

    async fn add_diagnostics(&self, report: &mut ApplyReport, ars: &[kube::core::ApiResource]) {
        let wanted: Vec<usize> = report
            .objects
            .iter()
            .enumerate()
            .filter(|(i, o)| {
                *i < ars.len() && matches!(o.status, Status::NotReady(_) | Status::Failed(_))
            })
            .map(|(i, _)| i)
            .collect();
        let found: Vec<(usize, Vec<String>)> = futures::stream::iter(wanted)
            .map(|i| {
                let id = report.objects[i].object.clone();
                let ar = ars[i].clone();
                async move { (i, diagnose::diagnose(&self.client, &id, &ar).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (i, d) in found {
            report.objects[i].diagnostics = d;
        }
    }
}

fn nodes(objects: &[Object]) -> Vec<Node> {
    objects
        .iter()
        .map(|o| Node {
            id: o.id.clone(),
            source: o.manifest.source.clone(),
            depends_on: o
                .manifest
                .annotation(DEPENDS_ON_ANNOTATION)
                .map(str::to_string),
            defines: o.defines.clone(),
        })
        .collect()
}

/// What to send: with an inventory, only objects whose manifest changed,
/// that are missing, or whose fields someone else changed.
fn decide(objects: &[Object], loaded: Option<&Loaded>, opts: &ApplyOptions) -> Vec<Decision> {
    objects
        .iter()
        .map(|o| {
            let Some(loaded) = loaded else {
                return Decision::Send { recorded: None };
            };
            let key = staged::key(o);
            let record = loaded.previous.records.get(&key);
            let live = loaded.live.get(&key);
            match (record, live) {
                (Some(r), Some(m))
                    if !m.deleting
                        && !opts.force_conflicts
                        && r.manifest == inventory::manifest_digest(&o.manifest.object)
                        && (m.resource_version == r.resource_version
                            || (m.ownership.is_some() && m.ownership == r.ownership)) =>
                {
                    Decision::Skip { deleting: false }
                }
                (_, Some(m)) => Decision::Send {
                    recorded: Some(m.resource_version.clone()),
                },
                _ => Decision::Send { recorded: None },
            }
        })
        .collect()
}

/// The member records after this apply.
fn records_after(
    loaded: &Loaded,
    objects: &[Object],
    decisions: &[Decision],
    outcomes: &[Outcome],
    pruned: &HashSet<Key>,
    opts: &ApplyOptions,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut in_bundle = HashSet::new();
    for ((o, d), out) in objects.iter().zip(decisions).zip(outcomes) {
        let key = staged::key(o);
        in_bundle.insert(key.clone());
        let fresh = |resource_version: String, ownership: Option<String>| Record {
            group: o.id.group.clone(),
            version: o.id.version.clone(),
            kind: o.id.kind.clone(),
            namespace: o.id.namespace.clone(),
            name: o.id.name.clone(),
            resource_version,
            manifest: inventory::manifest_digest(&o.manifest.object),
            ownership,
        };
        let record = match (d, &out.live, loaded.live.get(&key)) {
            (Decision::Skip { .. }, _, Some(m)) => {
                Some(fresh(m.resource_version.clone(), m.ownership.clone()))
            }
            (Decision::Send { .. }, Some(live), _) => Some(fresh(
                live.resource_version().unwrap_or_default().to_string(),
                live.ownership(&opts.field_manager),
            )),
            _ => loaded.previous.records.get(&key).cloned(),
        };
        records.extend(record);
    }
    // Members left out of this bundle stay recorded until they are pruned.
    for (key, r) in &loaded.previous.records {
        if !in_bundle.contains(key) && !pruned.contains(key) && loaded.live.contains_key(key) {
            records.push(r.clone());
        }
    }
    records
}

fn report_of(objects: &[Object], plan: &Plan, outcomes: &[Outcome], dry_run: bool) -> ApplyReport {
    ApplyReport {
        objects: objects
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(i, (o, out))| ObjectResult {
                object: o.id.clone(),
                source: o.manifest.source.clone(),
                wave: plan.wave_of(i),
                action: out.action,
                error: out.error.clone(),
                conflicts: out.conflicts.clone(),
                status: match (&out.readiness, plan.gates[i] && !dry_run) {
                    (Some(r), true) => to_status(r),
                    _ => Status::NotChecked,
                },
                diagnostics: Vec::new(),
                note: out.note.clone(),
            })
            .collect(),
        dry_run,
        waves: plan.waves.len(),
        apply_millis: 0,
        wait_millis: 0,
    }
}

enum Failure {
    Applying,
    NotReady,
}

fn failure_of(objects: &[Object], plan: &Plan, outcomes: &[Outcome]) -> Option<Failure> {
    if outcomes.iter().any(|o| o.action == Action::Failed) {
        return Some(Failure::Applying);
    }
    let gate_trouble = (0..objects.len())
        .filter(|&i| plan.gates[i])
        .filter_map(|i| outcomes[i].readiness.as_ref());
    let mut not_ready = false;
    for r in gate_trouble {
        match r {
            Readiness::Failed(_) => return Some(Failure::Applying),
            Readiness::InProgress(_) => not_ready = true,
            Readiness::Ready => {}
        }
    }
    if not_ready || outcomes.iter().any(|o| o.action == Action::Skipped) {
        return Some(Failure::NotReady);
    }
    None
}

fn to_status(r: &Readiness) -> Status {
    match r {
        Readiness::Ready => Status::Ready,
        Readiness::InProgress(s) => Status::NotReady(s.clone()),
        Readiness::Failed(s) => Status::Failed(s.clone()),
    }
}
