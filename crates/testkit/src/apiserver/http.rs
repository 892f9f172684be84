//! HTTP routing: discovery, resource requests and watches.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::registry::{self, ResourceType};
use super::store::{DeleteOpts, EventType, PatchKind, Propagation, State, WriteOpts};
use super::util::{ApiError, Query, Selector};

/// Response body type.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// State shared by all connections.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The newest resourceVersion; watches wait on it.
    pub rv_tx: watch::Sender<u64>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long a written CRD waits before it is served and Established.
    pub crd_delay: Duration,
    /// The bearer token every request must carry.
    pub token: String,
    /// How long a deleted namespace stays Terminating before its contents
    /// and then it go.
    pub namespace_delay: Duration,
    /// Requests received so far (every one, answered or refused).
    pub requests: std::sync::atomic::AtomicU64,
}

/// How soon after a namespace is created it gets `kube-root-ca.crt`.
const ROOT_CA_DELAY: Duration = Duration::from_millis(20);
/// How long the simulated garbage collector takes to act on a foreground or
/// orphaning deletion.
const GC_DELAY: Duration = Duration::from_millis(20);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    if e.is_page_not_found() {
        return text_response(404, "404 page not found\n");
    }
    let mut r = json_response(e.code, &e.to_status());
    if let Some(secs) = e.details["retryAfterSeconds"].as_u64()
        && let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let bearer = header(&parts.headers, "authorization");
    if bearer.strip_prefix("Bearer ") != Some(shared.token.as_str()) {
        return Ok(json_response(
            401,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        ));
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            ))));
        }
    };
    let ctx = Ctx {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: Query::parse(parts.uri.query()),
        accept: header(&parts.headers, "accept"),
        content_type: header(&parts.headers, "content-type"),
        user_agent: header(&parts.headers, "user-agent"),
        body,
    };
    Ok(route(&shared, ctx).unwrap_or_else(|e| error_response(&e)))
}

fn header(h: &hyper::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

struct Ctx {
    method: Method,
    path: String,
    query: Query,
    accept: String,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

fn route(shared: &Arc<Shared>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let segs: Vec<String> = ctx
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let aggregated = ctx.accept.contains("as=APIGroupDiscoveryList");
    let get = ctx.method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => Ok(json_response(200, &version())),
        ["healthz" | "livez" | "readyz"] if get => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/plain"),
            );
            Ok(r)
        }
        ["api"] if get => {
            if aggregated {
                let types = shared.lock().discoverable_types();
                Ok(aggregated_response(&registry::aggregated(&types, true)))
            } else {
                Ok(json_response(
                    200,
                    &json!({"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
                ))
            }
        }
        ["apis"] if get => {
            let types = shared.lock().discoverable_types();
            if aggregated {
                Ok(aggregated_response(&registry::aggregated(&types, false)))
            } else {
                Ok(json_response(200, &registry::group_list(&types)))
            }
        }
        ["api", "v1"] if get => {
            let types = shared.lock().discoverable_types();
            Ok(json_response(
                200,
                &registry::resource_list(&types, "", "v1"),
            ))
        }
        ["apis", g] if get => {
            let types = shared.lock().discoverable_types();
            let groups = registry::groups(&types);
            let (name, versions) = groups
                .iter()
                .find(|(n, _)| n == g)
                .ok_or_else(ApiError::page_not_found)?;
            Ok(json_response(200, &registry::api_group(name, versions)))
        }
        ["apis", g, v] if get => {
            let types = shared.lock().discoverable_types();
            if !types.iter().any(|t| t.group == *g && t.version == *v)
                || shared.lock().undiscoverable(g, v)
            {
                return Err(ApiError::page_not_found());
            }
            Ok(json_response(200, &registry::resource_list(&types, g, v)))
        }
        ["api", "v1", rest @ ..] => resource(shared, &ctx, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(shared, &ctx, g, v, rest),
        _ => Err(ApiError::page_not_found()),
    }
}

fn aggregated_response(v: &Value) -> Response<Body> {
    let mut r = json_response(200, v);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(AGGREGATED_CT),
    );
    r
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "gitVersion": "v1.34.0-tendril-testkit",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn decode_body(ctx: &Ctx) -> Result<Value, ApiError> {
    if ctx.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            let yaml = ctx.content_type.contains("yaml");
            if !yaml {
                return Err(ApiError::bad_request(format!(
                    "the request body is not valid JSON: {json_err}"
                )));
            }
            let text = std::str::from_utf8(&ctx.body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not UTF-8: {e}"))
            })?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })
        }
    }
}

fn resource(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let ns_sub = group.is_empty()
        && rest.len() == 3
        && rest[0] == "namespaces"
        && matches!(rest[2], "status" | "finalize");
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !ns_sub {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let rt = {
        let st = shared.lock();
        match st.find(group, version, plural) {
            Some(rt) if st.initializing(&rt) => return Err(ApiError::initializing()),
            Some(rt) => rt,
            None if st.serves(group, version) => return Err(ApiError::no_route()),
            None => return Err(ApiError::page_not_found()),
        }
    };
    if (rt.namespaced && ns.is_none() && name.is_some()) || (!rt.namespaced && ns.is_some()) {
        return Err(ApiError::no_route());
    }
    let status = match sub {
        None => false,
        Some("status") if rt.status => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    let ns_str = ns.unwrap_or("");
    let q = &ctx.query;
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value {other:?}: only \"All\" is supported"
            )));
        }
    };
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let ua = ctx.user_agent.split('/').next().unwrap_or("").trim();
            if ua.is_empty() {
                "unknown".into()
            } else {
                ua.to_owned()
            }
        });
    let mut opts = WriteOpts {
        dry_run,
        manager,
        force: false,
    };
    let meta_only = ctx.accept.contains("as=PartialObjectMetadata");
    let present = |v: Value| -> Value { shape(present(v, &rt), meta_only) };

    match (&ctx.method, name) {
        (&Method::GET, None) => {
            if q.flag("watch") {
                return start_watch(shared, &rt, ns, q, meta_only);
            }
            list(shared, &rt, ns, q, meta_only)
        }
        (&Method::GET, Some(n)) => {
            let obj = shared.lock().get(&rt, ns_str, n)?;
            Ok(object_response(200, &obj, &rt, meta_only))
        }
        (&Method::POST, None) => {
            let body = decode_body(ctx)?;
            let created = shared.lock().create(&rt, ns_str, body, &opts)?;
            notify(shared);
            Ok(json_response(201, &present(created)))
        }
        (&Method::PUT, Some(n)) => {
            let body = decode_body(ctx)?;
            let updated = shared.lock().update(&rt, ns_str, n, body, status, &opts)?;
            notify(shared);
            Ok(json_response(200, &present(updated)))
        }
        (&Method::PATCH, Some(n)) => {
            let ct = ctx.content_type.split(';').next().unwrap_or("").trim();
            let apply =
                ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor";
            // A re-apply of the very configuration this manager applied last,
            // to an object nobody changed since, changes nothing: answer
            // without decoding or merging again.
            let body_hash = {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hasher::write(&mut h, &ctx.body);
                std::hash::Hasher::finish(&h)
            };
            if apply && q.get("fieldManager").is_some_and(|m| !m.is_empty()) {
                let hit = shared
                    .lock()
                    .memo_hit(&rt, ns_str, n, &opts.manager, status, body_hash);
                if let Some(live) = hit {
                    return Ok(object_response(200, &live, &rt, meta_only));
                }
            }
            let body = decode_body(ctx)?;
            if apply {
                if q.get("fieldManager").is_none_or(str::is_empty) {
                    return Err(ApiError::invalid(
                        "PatchOptions",
                        "meta.k8s.io",
                        "",
                        &[(
                            "fieldManager".into(),
                            "Required value: is required for apply patch".into(),
                        )],
                    ));
                }
                opts.force = q.flag("force");
                let mut st = shared.lock();
                let existed = st.get(&rt, ns_str, n).is_ok();
                let out = st.apply(&rt, ns_str, n, body, status, &opts)?;
                if !dry_run {
                    st.memo_store(&rt, ns_str, n, &opts.manager, status, body_hash, &out);
                }
                drop(st);
                notify(shared);
                return Ok(json_response(
                    if existed { 200 } else { 201 },
                    &present(out),
                ));
            }
            if q.get("force").is_some() {
                return Err(ApiError::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    &[(
                        "force".into(),
                        "Forbidden: may not be specified for non-apply patch".into(),
                    )],
                ));
            }
            let kind = match ct {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" if !rt.custom => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                _ => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ct:?})"
                        ),
                    ));
                }
            };
            let out = shared
                .lock()
                .patch(&rt, ns_str, n, kind, body, status, &opts)?;
            notify(shared);
            Ok(json_response(200, &present(out)))
        }
        (&Method::DELETE, Some(n)) if !status => {
            let dopts = delete_options(ctx, dry_run)?;
            let out = shared.lock().delete(&rt, ns_str, n, &dopts)?;
            notify(shared);
            // Gone at once: the real server answers with a Status, except
            // for the kinds whose registry returns the deleted object
            // (`ReturnDeletedObject`).
            let returns_object = rt.custom
                || (rt.group.is_empty()
                    && matches!(
                        rt.plural.as_str(),
                        "pods"
                            | "namespaces"
                            | "services"
                            | "serviceaccounts"
                            | "persistentvolumeclaims"
                            | "persistentvolumes"
                    ))
                || (rt.group == "storage.k8s.io" && rt.plural == "storageclasses")
                || rt.plural == "customresourcedefinitions";
            if !dry_run && !returns_object && out["metadata"]["deletionTimestamp"].is_null() {
                let mut details =
                    json!({"name": n, "kind": rt.plural, "uid": out["metadata"]["uid"]});
                if !rt.group.is_empty() {
                    details["group"] = json!(rt.group);
                }
                return Ok(json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "details": details}),
                ));
            }
            // Not gone yet and `orphanDependents: false` asked for: 202, as
            // the real server answers (200 otherwise).
            let code = if !dry_run
                && !out["metadata"]["deletionTimestamp"].is_null()
                && dopts.cascade_asked
            {
                202
            } else {
                200
            };
            Ok(json_response(code, &present(out)))
        }
        (&Method::DELETE, None) => {
            let labels = Selector::parse(q.get("labelSelector"), false)?;
            let fields = Selector::parse(q.get("fieldSelector"), true)?;
            fields.check_fields(&rt.group, &rt.plural, rt.custom)?;
            let mut dopts = delete_options(ctx, dry_run)?;
            dopts.uid = None;
            dopts.resource_version = None;
            let mut st = shared.lock();
            let victims = st.list(&rt, ns, &labels, &fields);
            let mut items = Vec::new();
            for v in victims {
                let vns = v["metadata"]["namespace"].as_str().unwrap_or("");
                let vname = v["metadata"]["name"].as_str().unwrap_or("");
                if let Ok(gone) = st.delete(&rt, vns, vname, &dopts) {
                    items.push(present(gone));
                }
            }
            let rv = st.rv;
            drop(st);
            notify(shared);
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({})",
                ctx.method
            ),
        )),
    }
}

/// `DeleteOptions` from the body (what kube-rs sends) and the query.
fn delete_options(ctx: &Ctx, query_dry_run: bool) -> Result<DeleteOpts, ApiError> {
    let body: Value = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&ctx.body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let body_dry_run = match &body["dryRun"] {
        Value::Null => false,
        Value::Array(a) if a.iter().all(|v| v == "All") => !a.is_empty(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value {other}: only \"All\" is supported"
            )));
        }
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .or(ctx.query.get("propagationPolicy"))
        .unwrap_or("");
    if !matches!(policy, "" | "Orphan" | "Background" | "Foreground") {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy {policy:?} is not one of Orphan, Background, Foreground"
        )));
    }
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let propagation = match policy {
        "Orphan" => Propagation::Orphan,
        "Foreground" => Propagation::Foreground,
        "Background" => Propagation::Background,
        _ if body["orphanDependents"] == true => Propagation::Orphan,
        _ => Propagation::Background,
    };
    Ok(DeleteOpts {
        dry_run: query_dry_run || body_dry_run,
        propagation,
        cascade_asked: body["orphanDependents"] == false,
        uid: text(&body["preconditions"]["uid"]),
        resource_version: text(&body["preconditions"]["resourceVersion"]),
    })
}

fn notify(shared: &Arc<Shared>) {
    let (rv, pending, deleted, created, collect) = {
        let mut st = shared.lock();
        (
            st.rv,
            std::mem::take(&mut st.pending_crds),
            std::mem::take(&mut st.pending_namespace_deletions),
            std::mem::take(&mut st.pending_root_ca),
            std::mem::take(&mut st.pending_gc),
        )
    };
    for (key, uid) in collect {
        let shared = shared.clone();
        // the garbage collector of the controller-manager, a moment later
        tokio::spawn(async move {
            tokio::time::sleep(GC_DELAY).await;
            shared.lock().collect_garbage(&key, &uid);
            notify(&shared);
        });
    }
    for ns in deleted {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(shared.namespace_delay).await;
            shared.lock().finalize_namespace(&ns);
            notify(&shared);
        });
    }
    for ns in created {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ROOT_CA_DELAY).await;
            shared.lock().publish_root_ca(&ns);
            notify(&shared);
        });
    }
    for name in pending {
        let shared = shared.clone();
        // As on a real server: names accepted and storage initializing
        // (lists 429), then lists served, then Established and discoverable.
        tokio::spawn(async move {
            let third = shared.crd_delay / 3;
            tokio::time::sleep(third).await;
            shared.lock().crd_names_accepted(&name);
            notify(&shared);
            tokio::time::sleep(third).await;
            shared.lock().crd_storage_ready(&name);
            tokio::time::sleep(third).await;
            shared.lock().crd_changed(&name);
            notify(&shared);
        });
    }
    shared.rv_tx.send_if_modified(|cur| {
        if *cur != rv {
            *cur = rv;
            true
        } else {
            false
        }
    });
}

/// A response with one stored object, cloned only when it must change.
fn object_response(code: u16, obj: &Value, rt: &ResourceType, meta_only: bool) -> Response<Body> {
    if rt.custom || meta_only {
        json_response(code, &shape(present(obj.clone(), rt), meta_only))
    } else {
        json_response(code, obj)
    }
}

/// An object as served at `rt`'s version (custom resources are stored once
/// for all versions).
fn present(mut v: Value, rt: &ResourceType) -> Value {
    if rt.custom {
        v["apiVersion"] = json!(rt.api_version());
    }
    v
}

/// The object itself, or its `PartialObjectMetadata` when the client asked
/// for metadata only (`Accept: ...;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`).
fn shape(v: Value, meta_only: bool) -> Value {
    if !meta_only {
        return v;
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": v.get("metadata").cloned().unwrap_or(Value::Null),
    })
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    meta_only: bool,
) -> Result<Response<Body>, ApiError> {
    let labels = Selector::parse(q.get("labelSelector"), false)?;
    let fields = Selector::parse(q.get("fieldSelector"), true)?;
    fields.check_fields(&rt.group, &rt.plural, rt.custom)?;
    let st = shared.lock();
    if q.get("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok())
        && rv != st.rv
    {
        return Err(ApiError::gone(format!(
            "The resourceVersion for the provided list is too old (requested {rv}, current {}).",
            st.rv
        )));
    }
    let all = st.list(rt, ns, &labels, &fields);
    let rv = st.rv;
    drop(st);
    let after = q.get("continue").filter(|c| !c.is_empty());
    let after = match after {
        Some(tok) => Some(
            unhex(tok)
                .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {tok:?}")))?,
        ),
        None => None,
    };
    let key = |v: &Value| {
        format!(
            "{}/{}",
            v["metadata"]["namespace"].as_str().unwrap_or(""),
            v["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    let start = match &after {
        Some(a) => all.partition_point(|v| key(v).as_str() <= a.as_str()),
        None => 0,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page = &all[start..];
    let taken = page.len().min(limit);
    let items: Vec<Value> = page[..taken]
        .iter()
        .map(|v| {
            let mut item = shape(present((**v).clone(), rt), meta_only);
            // Lists of built-in kinds carry no apiVersion/kind per item.
            if !rt.custom
                && !meta_only
                && let Some(o) = item.as_object_mut()
            {
                o.remove("apiVersion");
                o.remove("kind");
            }
            item
        })
        .collect();
    let (kind, api_version) = if meta_only {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (format!("{}List", rt.kind), rt.api_version())
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if rt.custom {
        // Lists of custom resources always carry `continue`, as on a real server.
        meta["continue"] = json!("");
    }
    if taken < page.len()
        && let Some(last) = items.last()
    {
        meta["continue"] = json!(hex(&key(last)));
        meta["remainingItemCount"] = json!(page.len() - taken);
    }
    Ok(json_response(
        200,
        &json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}),
    ))
}

/// A streamed response body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[derive(Serialize)]
struct WatchLine<'a> {
    #[serde(rename = "type")]
    typ: &'a str,
    object: &'a Value,
}

fn line(typ: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&WatchLine { typ, object: obj }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchSpec {
    rt: ResourceType,
    ns: Option<String>,
    labels: Selector,
    fields: Selector,
    start: Option<u64>,
    initial: bool,
    bookmarks: bool,
    timeout: Duration,
    meta_only: bool,
}

impl WatchSpec {
    fn matches(&self, v: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| v["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches(v)
            && self.fields.matches(v)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}),
        )
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    meta_only: bool,
) -> Result<Response<Body>, ApiError> {
    let rv_param = q.get("resourceVersion").filter(|r| !r.is_empty());
    let start = match rv_param {
        None | Some("0") => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version {r:?}: not a number"))
        })?),
    };
    let initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    if initial && !bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            &[(
                "allowWatchBookmarks".into(),
                "Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set".into(),
            )],
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let fields = Selector::parse(q.get("fieldSelector"), true)?;
    fields.check_fields(&rt.group, &rt.plural, rt.custom)?;
    let spec = WatchSpec {
        rt: rt.clone(),
        ns: ns.map(str::to_owned),
        labels: Selector::parse(q.get("labelSelector"), false)?,
        fields,
        start,
        initial,
        bookmarks,
        timeout: Duration::from_secs(timeout),
        meta_only,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    tokio::spawn(run_watch(shared.clone(), spec, tx));
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn run_watch(shared: Arc<Shared>, spec: WatchSpec, tx: mpsc::Sender<Bytes>) {
    let deadline = Instant::now() + spec.timeout;
    let mut rv_rx = shared.rv_tx.subscribe();
    rv_rx.borrow_and_update();
    let gr = spec.rt.group_resource();
    let start: Result<(u64, Vec<Arc<Value>>), ApiError> = {
        let st = shared.lock();
        match spec.start {
            Some(rv) if !spec.initial => {
                if rv < st.compacted {
                    Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        st.compacted
                    )))
                } else {
                    Ok((rv, Vec::new()))
                }
            }
            _ => {
                let objs: Vec<Arc<Value>> = st
                    .all_of(&gr)
                    .into_iter()
                    .filter(|v| spec.matches(v))
                    .collect();
                Ok((st.rv, objs))
            }
        }
    };
    let (mut cursor, snapshot) = match start {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(line("ERROR", &e.to_status())).await;
            return;
        }
    };
    for obj in snapshot {
        if tx
            .send(line(
                "ADDED",
                &shape(present((*obj).clone(), &spec.rt), spec.meta_only),
            ))
            .await
            .is_err()
        {
            return;
        }
    }
    if spec.initial && tx.send(spec.bookmark(cursor, true)).await.is_err() {
        return;
    }
    let interval = shared.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;
    loop {
        rv_rx.borrow_and_update();
        let batch = {
            let st = shared.lock();
            match st.events_since(cursor) {
                Ok(evs) => {
                    let now = st.rv;
                    Ok((evs, now))
                }
                Err(()) => Err(st.compacted),
            }
        };
        let (events, now) = match batch {
            Ok(b) => b,
            Err(compacted) => {
                let e = ApiError::gone(format!("too old resource version: {cursor} ({compacted})"));
                let _ = tx.send(line("ERROR", &e.to_status())).await;
                return;
            }
        };
        for ev in events.iter().filter(|e| e.gr == gr) {
            let now_match = spec.matches(&ev.obj);
            let was_match = ev.prev.as_deref().is_some_and(|p| spec.matches(p));
            let typ = match ev.typ {
                EventType::Added if now_match => "ADDED",
                EventType::Deleted if was_match || now_match => "DELETED",
                EventType::Modified => match (was_match, now_match) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => continue,
                },
                _ => continue,
            };
            if tx
                .send(line(
                    typ,
                    &shape(present((*ev.obj).clone(), &spec.rt), spec.meta_only),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
        cursor = cursor.max(now);
        tokio::select! {
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                if tx.send(spec.bookmark(cursor, false)).await.is_err() {
                    return;
                }
                next_bookmark = Instant::now() + interval;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if spec.bookmarks {
                    let _ = tx.send(spec.bookmark(cursor, false)).await;
                }
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
