//! Applying one object: a server-side apply `PATCH`, and what its answer says.
//!
//! Created, configured or unchanged is told from the answer alone, never
//! from a read before the write: `201` means created; on `200` the returned
//! `resourceVersion` is compared with the one the inventory recorded (equal:
//! unchanged). Without a recorded version an existing object is reported
//! `configured`. A dry run (which writes nothing, so versions never move)
//! reads the live object and compares it with the server's dry-run result.

use super::delete;
use super::report::{Action, ApplyEvent, FieldConflict};
use super::request::{self, error_text, is_not_found};
use super::resolve::Object;
use super::{ApplyOptions, ObjectRef};
use kube::Client;
use kube::api::{DynamicObject, GetParams, Patch, PatchParams};
use kube::core::{Request, Resource};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// How long an apply of a custom resource answered `404` (its kind not
/// served) is retried. A real server can still answer so for a moment after
/// the CRD reports `Established`: the handler and discovery catch up, and on
/// a control plane of several API servers one may lag behind another.
pub(crate) const NOT_SERVED_RETRY: Duration = Duration::from_secs(10);

/// Why one object was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Other field managers own fields the manifest sets to other values.
    #[error("{}conflict with other field managers: {}; take these fields over (force conflicts) or remove them from the manifest", if *.dry_run { "would fail: " } else { "" }, owners(.conflicts, .message))]
    Conflict {
        /// Who owns what.
        conflicts: Vec<FieldConflict>,
        /// The server's message (used when it names no fields).
        message: String,
        /// Whether this was a dry run.
        dry_run: bool,
    },
    /// The change touches a field the server does not let change.
    #[error(
        "the change touches an immutable field: {message}; delete the object first, or let tendril recreate objects whose immutable fields change"
    )]
    Immutable {
        /// The server's message.
        message: String,
    },
    /// The object's namespace does not exist.
    #[error(
        "namespace {namespace} does not exist: create it or add its Namespace to the bundle ({message})"
    )]
    MissingNamespace {
        /// The namespace.
        namespace: String,
        /// The server's message.
        message: String,
    },
    /// The server does not serve the object's kind (still not, for a custom
    /// resource, after retrying for [`NOT_SERVED_RETRY`]).
    #[error(
        "the server does not serve this kind: {0}; check that its CustomResourceDefinition is installed and Established"
    )]
    NotServed(String),
    /// The server refused the apply for another reason.
    #[error("the server rejected it: {0}")]
    Rejected(String),
    /// No answer before the deadline.
    #[error("no answer from the API server within the timeout ({0})")]
    NoAnswer(String),
    /// Deleting it (to recreate or prune it) failed.
    #[error("cannot delete it: {0}")]
    Delete(String),
    /// Not applied because an object it waits for failed or was not ready.
    #[error("not applied: {0} failed or was not ready")]
    Dependency(ObjectRef),
}

fn owners(conflicts: &[FieldConflict], message: &str) -> String {
    if conflicts.is_empty() {
        return message.to_string();
    }
    conflicts
        .iter()
        .map(|c| format!("{:?} owns {}", c.manager, c.fields.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl serde::Serialize for ObjectError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one apply did.
pub(crate) struct Applied {
    pub action: Action,
    /// In a dry run with forced conflicts: the fields forcing would take over.
    pub conflicts: Vec<FieldConflict>,
    pub note: Option<String>,
    /// The object as the server returned it (not in a dry run).
    pub live: Option<Live>,
}

/// A live object as far as readiness and the inventory need it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub slim: Slim,
}

impl Live {
    pub fn resource_version(&self) -> Option<&str> {
        self.slim.metadata.resource_version.as_deref()
    }
    pub fn generation(&self) -> Option<i64> {
        self.slim.metadata.generation
    }
    /// A digest of what `manager` owns (its Apply entry), to tell drift.
    pub fn ownership(&self, manager: &str) -> Option<String> {
        ownership(&self.slim.metadata.managed_fields, manager)
    }
}

/// A digest of the fields `manager` owns through Apply on the main resource:
/// it changes when someone else takes over or removes one of those fields.
pub(crate) fn ownership(entries: &[ManagedEntry], manager: &str) -> Option<String> {
    use sha2::Digest;
    let entry = entries.iter().find(|e| {
        e.manager == manager
            && e.operation == "Apply"
            && e.subresource.as_deref().unwrap_or("").is_empty()
    })?;
    let text = serde_json::to_string(&(&entry.api_version, &entry.fields_v1)).ok()?;
    Some(hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16]))
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    #[serde(rename = "fieldsV1")]
    pub fields_v1: Value,
}

/// The parts of an object readiness rules and the inventory read; the rest
/// (a CRD's schema, ...) is skipped while parsing.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Slim {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: SlimMeta,
    pub spec: SlimSpec,
    pub status: Value,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SlimMeta {
    pub name: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub deletion_timestamp: Option<String>,
    pub managed_fields: Vec<ManagedEntry>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SlimSpec {
    pub replicas: Option<i64>,
    pub update_strategy: Option<Value>,
    #[serde(rename = "type")]
    pub service_type: Option<String>,
}

impl Slim {
    /// The JSON the readiness rules judge.
    pub fn to_value(&self) -> Value {
        let mut meta = serde_json::Map::new();
        meta.insert("name".into(), Value::String(self.metadata.name.clone()));
        if let Some(g) = self.metadata.generation {
            meta.insert("generation".into(), g.into());
        }
        if let Some(d) = &self.metadata.deletion_timestamp {
            meta.insert("deletionTimestamp".into(), Value::String(d.clone()));
        }
        let mut spec = serde_json::Map::new();
        if let Some(r) = self.spec.replicas {
            spec.insert("replicas".into(), r.into());
        }
        if let Some(u) = &self.spec.update_strategy {
            spec.insert("updateStrategy".into(), u.clone());
        }
        if let Some(t) = &self.spec.service_type {
            spec.insert("type".into(), Value::String(t.clone()));
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

/// Server-side applies one object. `recorded` is the resourceVersion the
/// inventory recorded after the previous apply, when there is one.
pub(crate) async fn apply_object(
    client: &Client,
    object: &Object,
    recorded: Option<&str>,
    opts: &ApplyOptions,
    deadline: Instant,
    progress: super::Sink<'_>,
) -> Result<Applied, ObjectError> {
    let one = async {
        if opts.dry_run {
            dry_run(client, object, opts, deadline).await
        } else {
            apply_for_real(client, object, recorded, opts, deadline, progress).await
        }
    };
    match tokio::time::timeout_at(deadline, one).await {
        Ok(r) => r,
        Err(_) => Err(ObjectError::NoAnswer(super::report::humanize(opts.timeout))),
    }
}

fn params(opts: &ApplyOptions, force: bool) -> PatchParams {
    PatchParams {
        dry_run: opts.dry_run,
        force,
        field_manager: Some(opts.field_manager.clone()),
        field_validation: None,
    }
}

fn request_of(object: &Object) -> Request {
    Request::new(DynamicObject::url_path(
        &object.ar,
        object.id.namespace.as_deref(),
    ))
}

/// Sends the apply; a custom resource whose kind is not served yet is
/// tried again (see [`retry_not_served`]).
async fn patch<T: serde::de::DeserializeOwned>(
    client: &Client,
    object: &Object,
    params: &PatchParams,
    deadline: Instant,
) -> Result<request::Answer<T>, kube::Error> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let req = request_of(object)
            .patch(
                &object.id.name,
                params,
                &Patch::Apply(&object.manifest.object),
            )
            .map_err(kube::Error::BuildRequest)?;
        match request::send(client, req, deadline).await {
            Err(e) => match retry_not_served(&e, &object.id.group, attempt, started.elapsed()) {
                Some(pause) if Instant::now() + pause < deadline => {
                    tracing::debug!(object = %object.id, attempt, "kind not served yet; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                _ => return Err(e),
            },
            answer => return answer,
        }
    }
}

/// Whether a refused apply is tried again, and after which pause: only a
/// `404` that says the kind is not served (not a missing namespace) for a
/// custom resource (a group Kubernetes does not serve itself), while the
/// tries so far took less than [`NOT_SERVED_RETRY`]. The pause starts at
/// 50 ms and doubles up to 1 s.
pub(crate) fn retry_not_served(
    e: &kube::Error,
    group: &str,
    attempt: u32,
    elapsed: Duration,
) -> Option<Duration> {
    if !is_not_served(e) || super::plan::is_builtin_group(group) || elapsed >= NOT_SERVED_RETRY {
        return None;
    }
    let pause = Duration::from_millis(50).saturating_mul(1 << attempt.min(5));
    Some(pause.min(Duration::from_secs(1)))
}

/// A `404` that is not about a missing namespace: the kind is not served
/// (a text `404 page not found` for an unknown group, a JSON `NotFound`
/// "the server could not find the requested resource" for a known one).
fn is_not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && !is_missing_namespace(s))
}

fn is_missing_namespace(s: &kube::core::Status) -> bool {
    s.details.as_ref().is_some_and(|d| d.kind == "namespaces")
}

async fn apply_for_real(
    client: &Client,
    object: &Object,
    recorded: Option<&str>,
    opts: &ApplyOptions,
    deadline: Instant,
    progress: super::Sink<'_>,
) -> Result<Applied, ObjectError> {
    let params = params(opts, opts.force_conflicts);
    let (answer, recreated) = match patch::<Slim>(client, object, &params, deadline).await {
        Err(kube::Error::Api(s))
            if s.code == 422 && is_immutable(&s) && opts.recreate_immutable =>
        {
            progress(ApplyEvent::Recreating {
                object: object.id.clone(),
                reason: s.message.clone(),
            });
            delete::delete_and_wait(client, &object.ar, &object.id, deadline)
                .await
                .map_err(|e| ObjectError::Delete(error_text(&e)))?;
            (patch::<Slim>(client, object, &params, deadline).await, true)
        }
        other => (other, false),
    };
    let answer = answer.map_err(|e| failure(e, &object.id, opts.dry_run))?;
    let live = Live { slim: answer.body };
    let action = if recreated {
        Action::Recreated
    } else if answer.status == http::StatusCode::CREATED {
        Action::Created
    } else if recorded.is_some() && recorded == live.resource_version() {
        Action::Unchanged
    } else {
        Action::Configured
    };
    Ok(Applied {
        action,
        conflicts: Vec::new(),
        note: None,
        live: Some(live),
    })
}

async fn dry_run(
    client: &Client,
    object: &Object,
    opts: &ApplyOptions,
    deadline: Instant,
) -> Result<Applied, ObjectError> {
    // Nothing is written, so versions never move: compare whole objects.
    let get = request_of(object)
        .get(&object.id.name, &GetParams::default())
        .map_err(|e| ObjectError::Rejected(e.to_string()))?;
    let before = match request::send::<Value>(client, get, deadline).await {
        Ok(a) => Some(a.body),
        Err(e) if is_not_found(&e) => None,
        Err(e) => {
            return Err(ObjectError::Rejected(format!(
                "cannot read the live object: {}",
                error_text(&e)
            )));
        }
    };
    let mut conflicts = Vec::new();
    if opts.force_conflicts && before.is_some() {
        // Which fields forcing would take over: a dry run without force reports them.
        if let Err(kube::Error::Api(s)) =
            patch::<serde::de::IgnoredAny>(client, object, &params(opts, false), deadline).await
            && s.code == 409
        {
            conflicts = parse_conflicts(&s);
        }
    }
    let after = match patch::<Value>(
        client,
        object,
        &params(opts, opts.force_conflicts),
        deadline,
    )
    .await
    {
        Ok(a) => a.body,
        Err(kube::Error::Api(s))
            if s.code == 422 && is_immutable(&s) && opts.recreate_immutable =>
        {
            return Ok(Applied {
                action: Action::Recreated,
                conflicts,
                note: Some(format!("would be deleted and created again: {}", s.message)),
                live: None,
            });
        }
        Err(e) => return Err(failure(e, &object.id, true)),
    };
    let action = match before {
        None => Action::Created,
        Some(mut before) => {
            let mut after = after;
            strip_volatile(&mut before);
            strip_volatile(&mut after);
            if before == after {
                Action::Unchanged
            } else {
                Action::Configured
            }
        }
    };
    Ok(Applied {
        action,
        conflicts,
        note: None,
        live: None,
    })
}

/// The per-object error for a refused apply.
fn failure(e: kube::Error, id: &ObjectRef, dry_run: bool) -> ObjectError {
    match e {
        kube::Error::Api(s) if s.code == 409 => ObjectError::Conflict {
            conflicts: parse_conflicts(&s),
            message: s.message.clone(),
            dry_run,
        },
        kube::Error::Api(s) if s.code == 422 && is_immutable(&s) => ObjectError::Immutable {
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 404 && is_missing_namespace(&s) => {
            ObjectError::MissingNamespace {
                namespace: id.namespace.clone().unwrap_or_default(),
                message: s.message.clone(),
            }
        }
        e if is_not_served(&e) => ObjectError::NotServed(error_text(&e)),
        e => ObjectError::Rejected(error_text(&e)),
    }
}

/// Removes what changes on every write but says nothing about content.
fn strip_volatile(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
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

    fn not_found(body: &str, details_kind: Option<&str>) -> kube::Error {
        let mut s = KStatus::failure(body, "NotFound").with_code(404);
        if let Some(kind) = details_kind {
            s = s.with_details(StatusDetails {
                name: "n".into(),
                group: String::new(),
                kind: kind.into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn a_custom_resource_not_served_yet_is_retried_with_growing_pauses() {
        // What a real server answers for a group it does not serve yet.
        let e = not_found("404 page not found", None);
        let ms = |a| retry_not_served(&e, "argoproj.io", a, Duration::from_millis(300));
        assert_eq!(ms(0), Some(Duration::from_millis(50)));
        assert_eq!(ms(1), Some(Duration::from_millis(100)));
        assert_eq!(ms(4), Some(Duration::from_millis(800)));
        assert_eq!(ms(9), Some(Duration::from_secs(1)));
        // A known group that does not serve the resource yet: JSON NotFound.
        let e = not_found(
            "the server could not find the requested resource",
            Some("applications"),
        );
        assert!(retry_not_served(&e, "argoproj.io", 0, Duration::ZERO).is_some());
    }

    #[test]
    fn the_not_served_retry_is_bounded_and_only_for_custom_resources() {
        let e = not_found("404 page not found", None);
        assert_eq!(
            retry_not_served(&e, "argoproj.io", 3, NOT_SERVED_RETRY),
            None
        );
        // Kubernetes' own kinds never lag behind a CRD.
        assert_eq!(retry_not_served(&e, "apps", 0, Duration::ZERO), None);
        assert_eq!(retry_not_served(&e, "", 0, Duration::ZERO), None);
        // A missing namespace is not a kind that is not served.
        let ns = not_found("namespaces \"shop\" not found", Some("namespaces"));
        assert_eq!(
            retry_not_served(&ns, "argoproj.io", 0, Duration::ZERO),
            None
        );
        let conflict = kube::Error::Api(
            KStatus::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        assert_eq!(
            retry_not_served(&conflict, "argoproj.io", 0, Duration::ZERO),
            None
        );
    }

    #[test]
    fn a_kind_still_not_served_is_its_own_error() {
        let id = ObjectRef {
            group: "argoproj.io".into(),
            version: "v1alpha1".into(),
            kind: "Application".into(),
            namespace: Some("argocd".into()),
            name: "root".into(),
        };
        let e = failure(not_found("404 page not found", None), &id, false);
        assert!(matches!(e, ObjectError::NotServed(_)), "{e:?}");
        assert!(e.to_string().contains("CustomResourceDefinition"), "{e}");
        let e = failure(
            not_found("namespaces \"argocd\" not found", Some("namespaces")),
            &id,
            false,
        );
        assert!(matches!(e, ObjectError::MissingNamespace { .. }), "{e:?}");
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
}
