//! Argo CD install: values, admin password, URL.
//!
//! [`render`] loads the embedded Argo CD chart (or the job's own), checks the
//! job's values against it and renders it once, into a [`Rendered`] that
//! `argocd.yaml`, the report and [`install`] share. [`install`] puts the
//! credentials only the cluster knows into that render (no second render),
//! applies it with its Namespace through the apply engine, recorded in the
//! apply set [`APPLYSET`] (objects a newer chart drops are pruned), waits
//! until every Argo CD workload is ready, then reads the admin password and
//! works out the URL.
//!
//! Re-deploying is idempotent:
//! - the Redis password is read back from the `argocd-redis` Secret and put
//!   into the rendered Secret again, so it never rotates;
//! - keys that Argo CD itself adds to `argocd-secret` (e.g. `server.secretkey`)
//!   stay: server-side apply removes only fields the `tendril` field manager
//!   applied before and no longer applies;
//! - a preset admin password is stored as a bcrypt hash; when the hash in the
//!   cluster already matches the password it is kept (with its mtime), so
//!   sessions are not invalidated by a re-deploy.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret as KubeSecret, Service};
use kube::Api;
use serde_json::{Value, json};

use crate::Secret;
use crate::apply::{self, ApplyEvent, ApplyOptions, ApplyReport, ApplySet, ResourceManager};
use crate::chart::{self, Chart, ChartError, RenderOptions, Values};

/// The name of the embedded Argo CD chart.
pub const CHART: &str = "argocd";
/// The Secret holding the Redis password (key `auth`).
pub const REDIS_SECRET: &str = "argocd-redis";
/// The Secret Argo CD keeps its settings and admin password hash in.
pub const ARGOCD_SECRET: &str = "argocd-secret";
/// The Secret Argo CD writes the generated admin password to on first start.
pub const INITIAL_ADMIN_SECRET: &str = "argocd-initial-admin-secret";
/// The API server's Service.
pub const SERVER_SERVICE: &str = "argocd-server";
/// The apply set an install is recorded in (a Secret in Argo CD's namespace).
pub const APPLYSET: &str = "tendril-argocd";

/// What can go wrong installing Argo CD.
#[derive(Debug, thiserror::Error)]
pub enum ArgoCdError {
    /// The chart could not be loaded or rendered.
    #[error("cannot render the Argo CD chart: {0}")]
    Chart(#[from] ChartError),
    /// Applying or waiting failed.
    #[error("{0}")]
    Apply(#[from] apply::ApplyError),
    /// A read from the cluster failed.
    #[error("cannot read {what} in namespace {namespace}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// The namespace.
        namespace: String,
        /// The client error.
        source: kube::Error,
    },
    /// A preset admin password, but the chart renders no `argocd-secret` to hold its hash.
    #[error(
        "tendril.argocd.admin_password is set, but the chart renders no Secret {ARGOCD_SECRET} to hold its hash (configs.secret.createSecret is false?); remove the preset password or let the chart create the Secret"
    )]
    NoAdminSecret,
    /// Hashing the preset admin password failed.
    #[error("cannot hash the preset admin password: {0}")]
    Hash(String),
}

/// How to install Argo CD: the job's `tendril.argocd` part, resolved.
#[derive(Debug, Clone)]
pub struct ArgoCdSpec {
    /// Namespace (also the release namespace).
    pub namespace: String,
    /// Values merged over the chart's defaults.
    pub values: Value,
    /// A preset admin password (stored in the cluster only as a bcrypt hash).
    pub admin_password: Option<Secret<String>>,
    /// How long to wait for every workload to be ready.
    pub timeout: Duration,
    /// Another chart (directory or `.tgz`) instead of the embedded one.
    pub chart: Option<std::path::PathBuf>,
    /// Refuse values the chart does not act on instead of warning.
    pub strict_values: bool,
}

impl ArgoCdSpec {
    /// The embedded chart in `namespace` with default values.
    pub fn new(namespace: impl Into<String>) -> Self {
        ArgoCdSpec {
            namespace: namespace.into(),
            values: json!({}),
            admin_password: None,
            timeout: Duration::from_secs(600),
            chart: None,
            strict_values: false,
        }
    }
}

/// A bcrypt hash of the admin password and the time it was set.
#[derive(Debug, Clone)]
pub struct AdminHash {
    /// `$2a$...` / `$2b$...`.
    pub hash: Secret<String>,
    /// RFC 3339.
    pub mtime: String,
}

/// What an install reads back from the cluster before rendering.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// The Redis password already in `argocd-redis`.
    pub redis_password: Option<Secret<String>>,
    /// The admin hash already in `argocd-secret`.
    pub admin: Option<AdminHash>,
}

/// The admin password, as far as tendril can tell.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", content = "password", rename_all = "snake_case")]
pub enum AdminPassword {
    /// Known: preset by the job or read from `argocd-initial-admin-secret`.
    Known(Secret<String>),
    /// Not retrievable: the initial secret was deleted (the password was rotated).
    NotRetrievable,
    /// Not read (dry run, or no cluster).
    Unknown,
}

/// Where Argo CD can be reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArgoCdUrl {
    /// The URL.
    pub url: String,
    /// A note when the URL is only reachable from inside the cluster, or a
    /// load balancer address was not assigned in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The result of an install.
#[derive(Debug)]
pub struct Installed {
    /// What applying did to each object.
    pub report: ApplyReport,
    /// The admin password.
    pub admin_password: AdminPassword,
    /// The URL.
    pub url: ArgoCdUrl,
}

/// Reads the Redis password and the admin hash an earlier install left.
pub async fn read_existing(
    client: &kube::Client,
    namespace: &str,
) -> Result<Existing, ArgoCdError> {
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let read = |what: &str, source| ArgoCdError::Read {
        what: what.to_string(),
        namespace: namespace.to_string(),
        source,
    };
    let redis = secrets
        .get_opt(REDIS_SECRET)
        .await
        .map_err(|e| read("Secret argocd-redis", e))?;
    let argocd = secrets
        .get_opt(ARGOCD_SECRET)
        .await
        .map_err(|e| read("Secret argocd-secret", e))?;
    let redis_password = redis
        .as_ref()
        .and_then(|s| secret_key(s, "auth"))
        .map(Secret::new);
    let admin = argocd.as_ref().and_then(|s| {
        Some(AdminHash {
            hash: Secret::new(secret_key(s, "admin.password")?),
            mtime: secret_key(s, "admin.passwordMtime").unwrap_or_default(),
        })
    });
    Ok(Existing {
        redis_password,
        admin,
    })
}

fn secret_key(secret: &KubeSecret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh random Redis password (32 alphanumeric characters).
pub fn random_password() -> Secret<String> {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    Secret::new(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect(),
    )
}

/// The bcrypt hash to store for `password`: the existing one when it already
/// matches (so the mtime, and with it every session, survives a re-deploy),
/// else a new hash stamped `now`.
pub fn admin_hash(
    password: &Secret<String>,
    existing: Option<&AdminHash>,
    now: &str,
) -> Result<AdminHash, ArgoCdError> {
    if let Some(old) = existing
        && bcrypt::verify(password.expose(), old.hash.expose()).unwrap_or(false)
        && !old.mtime.is_empty()
    {
        return Ok(old.clone());
    }
    let hash = bcrypt::hash(password.expose(), 10).map_err(|e| ArgoCdError::Hash(e.to_string()))?;
    Ok(AdminHash {
        hash: Secret::new(hash),
        mtime: now.to_string(),
    })
}

/// What a render puts into the Redis password Secret until [`install`]
/// injects the real password: what `argocd.yaml` holds.
pub const REDIS_PASSWORD_PLACEHOLDER: &str = "[redacted]";

/// The chart a spec names: the job's own (`spec.chart`), else the embedded one.
fn load_chart(spec: &ArgoCdSpec) -> Result<Chart, ChartError> {
    match &spec.chart {
        Some(path) => Chart::load(path.clone()),
        None => Chart::embedded(CHART),
    }
}

/// The Argo CD chart loaded, checked and rendered once for a job: the
/// manifests (the Redis password as [`REDIS_PASSWORD_PLACEHOLDER`], no
/// admin password hash), the values the chart does not act on, and the
/// merged values. Preflight makes it; `argocd.yaml`, the report and
/// [`install`] reuse it, and nothing renders the chart again.
#[derive(Debug)]
pub struct Rendered {
    manifests: Vec<chart::RenderedManifest>,
    warnings: chart::ValueWarnings,
    merged_values: Value,
}

/// Loads the chart `spec` names, checks the job's values against it and
/// renders it, once. With `spec.strict_values`, values the chart does not
/// act on are an error; otherwise they are in [`Rendered::warnings`].
pub fn render(spec: &ArgoCdSpec) -> Result<Rendered, ArgoCdError> {
    let chart = load_chart(spec)?;
    let values = Values::from_json(spec.values.clone(), "tendril.argocd.values")?;
    let warnings = chart.check_values(&values).enforce(spec.strict_values)?;
    let opts = RenderOptions::new("argocd", spec.namespace.clone())
        .with_values(values)
        .with_input(
            "redis_password",
            Secret::new(REDIS_PASSWORD_PLACEHOLDER.to_string()),
        );
    let manifests = chart.render(&opts)?;
    if spec.admin_password.is_some() && find_secret(&manifests, ARGOCD_SECRET).is_none() {
        return Err(ArgoCdError::NoAdminSecret);
    }
    Ok(Rendered {
        manifests,
        warnings,
        merged_values: chart.values_for(&opts),
    })
}

impl Rendered {
    /// The rendered manifests, in install order, with the Redis password
    /// placeholder: what `argocd.yaml` holds.
    pub fn manifests(&self) -> &[chart::RenderedManifest] {
        &self.manifests
    }

    /// The job's values the chart does not act on (empty when strict: those
    /// were an error).
    pub fn warnings(&self) -> &chart::ValueWarnings {
        &self.warnings
    }

    /// The values the chart saw: its defaults with the job's values merged over.
    pub fn merged_values(&self) -> &Value {
        &self.merged_values
    }

    /// The manifests as multi-document YAML (`argocd.yaml`).
    pub fn to_yaml(&self) -> String {
        chart::manifests_to_yaml(&self.manifests)
    }

    /// What an install applies: the manifests with the real Redis password
    /// (every `argocd-redis` entry the placeholder filled) and, when a
    /// password is preset, its hash in `argocd-secret`. The render itself is
    /// left as it is.
    pub fn with_credentials(
        &self,
        redis_password: &Secret<String>,
        admin: Option<&AdminHash>,
    ) -> Vec<chart::RenderedManifest> {
        let mut manifests = self.manifests.clone();
        if let Some(redis) = find_secret_mut(&mut manifests, REDIS_SECRET) {
            inject_redis_password(redis, redis_password);
        }
        if let Some(admin) = admin
            && let Some(secret) = find_secret_mut(&mut manifests, ARGOCD_SECRET)
        {
            set_secret_data(secret, "admin.password", admin.hash.expose());
            set_secret_data(secret, "admin.passwordMtime", &admin.mtime);
        }
        manifests
    }
}

fn is_secret(m: &chart::RenderedManifest, name: &str) -> bool {
    m.api_version == "v1" && m.kind == "Secret" && m.name == name
}

fn find_secret<'a>(
    manifests: &'a [chart::RenderedManifest],
    name: &str,
) -> Option<&'a chart::RenderedManifest> {
    manifests.iter().find(|m| is_secret(m, name))
}

fn find_secret_mut<'a>(
    manifests: &'a mut [chart::RenderedManifest],
    name: &str,
) -> Option<&'a mut chart::RenderedManifest> {
    manifests.iter_mut().find(|m| is_secret(m, name))
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Replaces the placeholder with `password` wherever the render put it in
/// the Secret: `data` entries (base64) and `stringData` entries (plain).
fn inject_redis_password(secret: &mut chart::RenderedManifest, password: &Secret<String>) {
    let encoded_placeholder = b64(REDIS_PASSWORD_PLACEHOLDER);
    let object = std::sync::Arc::make_mut(&mut secret.object);
    if let Some(Value::Object(data)) = object.get_mut("data") {
        for v in data.values_mut() {
            if v.as_str() == Some(encoded_placeholder.as_str()) {
                *v = Value::String(b64(password.expose()));
            }
        }
    }
    if let Some(Value::Object(data)) = object.get_mut("stringData") {
        for v in data.values_mut() {
            if v.as_str() == Some(REDIS_PASSWORD_PLACEHOLDER) {
                *v = Value::String(password.expose().clone());
            }
        }
    }
}

/// Sets `data.KEY` of a Secret to `text`, base64-encoded.
fn set_secret_data(secret: &mut chart::RenderedManifest, key: &str, text: &str) {
    let Value::Object(object) = std::sync::Arc::make_mut(&mut secret.object) else {
        return;
    };
    let data = object
        .entry("data")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !data.is_object() {
        *data = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(data) = data {
        data.insert(key.to_string(), Value::String(b64(text)));
    }
}

/// Converts rendered manifests into the apply engine's input.
pub fn to_apply(manifests: Vec<chart::RenderedManifest>) -> Vec<apply::Manifest> {
    manifests
        .into_iter()
        .map(|m| apply::Manifest::new(m.source, std::sync::Arc::unwrap_or_clone(m.object)))
        .collect()
}

/// What an install applies: Argo CD's Namespace (created first; every
/// namespaced object waits for it) and the rendered chart.
pub fn bundle(namespace: &str, manifests: Vec<chart::RenderedManifest>) -> Vec<apply::Manifest> {
    let mut out = vec![apply::Manifest::new(
        "argocd/namespace",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
    )];
    out.extend(to_apply(manifests));
    out
}

/// Reads the admin password: the preset one, else `argocd-initial-admin-secret`.
pub async fn admin_password(
    client: &kube::Client,
    namespace: &str,
    preset: Option<&Secret<String>>,
) -> Result<AdminPassword, ArgoCdError> {
    if let Some(p) = preset {
        return Ok(AdminPassword::Known(p.clone()));
    }
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let initial = secrets
        .get_opt(INITIAL_ADMIN_SECRET)
        .await
        .map_err(|source| ArgoCdError::Read {
            what: format!("Secret {INITIAL_ADMIN_SECRET}"),
            namespace: namespace.to_string(),
            source,
        })?;
    Ok(
        match initial.as_ref().and_then(|s| secret_key(s, "password")) {
            Some(p) => AdminPassword::Known(Secret::new(p)),
            None => AdminPassword::NotRetrievable,
        },
    )
}

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Where the URL comes from, decided from the values alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// An ingress or an explicitly configured domain: `https://<host>`.
    Domain(String),
    /// A Service of type LoadBalancer: wait for its address.
    LoadBalancer {
        /// `http` when the server runs insecure (TLS terminated elsewhere), else `https`.
        scheme: &'static str,
    },
    /// Neither: the in-cluster Service URL.
    InCluster,
}

/// Decides where the URL comes from. `user` is the job's values (to tell a
/// domain the job set from the chart's placeholder default); `merged` the
/// values after merging over the chart defaults.
pub fn url_source(user: &Value, merged: &Value) -> UrlSource {
    let ingress_on = lookup(merged, &["server", "ingress", "enabled"]) == Some(&Value::Bool(true));
    let host = lookup(merged, &["server", "ingress", "hostname"])
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .or_else(|| lookup(merged, &["global", "domain"]).and_then(Value::as_str));
    let user_domain = lookup(user, &["global", "domain"]).and_then(Value::as_str);
    if ingress_on && let Some(h) = host {
        return UrlSource::Domain(h.to_string());
    }
    if let Some(d) = user_domain.filter(|d| !d.is_empty()) {
        return UrlSource::Domain(d.to_string());
    }
    if lookup(merged, &["server", "service", "type"]).and_then(Value::as_str)
        == Some("LoadBalancer")
    {
        let insecure = matches!(
            lookup(merged, &["configs", "params", "server.insecure"]),
            Some(Value::Bool(true))
        ) || lookup(merged, &["configs", "params", "server.insecure"])
            .and_then(Value::as_str)
            == Some("true");
        return UrlSource::LoadBalancer {
            scheme: if insecure { "http" } else { "https" },
        };
    }
    UrlSource::InCluster
}

fn in_cluster(namespace: &str, note: String) -> ArgoCdUrl {
    ArgoCdUrl {
        url: format!("https://{SERVER_SERVICE}.{namespace}.svc"),
        note: Some(note),
    }
}

/// Works out the URL; for a load balancer, waits (up to `lb_wait`) for its address.
pub async fn url(
    client: &kube::Client,
    namespace: &str,
    source: &UrlSource,
    lb_wait: Duration,
) -> Result<ArgoCdUrl, ArgoCdError> {
    match source {
        UrlSource::Domain(host) => Ok(ArgoCdUrl {
            url: format!("https://{host}"),
            note: None,
        }),
        UrlSource::InCluster => Ok(in_cluster(
            namespace,
            "no ingress, domain or load balancer is configured: Argo CD is reachable only inside the cluster (or through a port-forward)".to_string(),
        )),
        UrlSource::LoadBalancer { scheme } => {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let cond = |svc: Option<&Service>| svc.and_then(load_balancer_address).is_some();
            let waited = tokio::time::timeout(
                lb_wait,
                kube::runtime::wait::await_condition(services.clone(), SERVER_SERVICE, cond),
            )
            .await;
            let svc = match waited {
                Ok(Ok(svc)) => svc,
                Ok(Err(_)) | Err(_) => None,
            };
            Ok(match svc.as_ref().and_then(load_balancer_address) {
                Some(addr) => ArgoCdUrl {
                    url: format!("{scheme}://{addr}"),
                    note: None,
                },
                None => in_cluster(
                    namespace,
                    format!(
                        "the load balancer of Service {SERVER_SERVICE} got no address within {}s; using the in-cluster URL",
                        lb_wait.as_secs()
                    ),
                ),
            })
        }
    }
}

fn load_balancer_address(svc: &Service) -> Option<String> {
    let ingress = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?;
    ingress
        .iter()
        .find_map(|i| i.hostname.clone().or_else(|| i.ip.clone()))
}

/// Options of an install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Server-side dry run: nothing changes in the cluster.
    pub dry_run: bool,
    /// The field manager.
    pub field_manager: String,
    /// How long to wait for a load balancer address.
    pub lb_wait: Duration,
    /// The time stamped on a new admin password hash (RFC 3339).
    pub now: String,
}

/// Applies the chart `rendered` (from [`render`] of the same `spec`) with
/// the Redis password already in the cluster (a new random one on first
/// install) and the preset admin password's hash, waits for Argo CD, and
/// reads the admin password and URL. Nothing is rendered again.
pub async fn install(
    client: &kube::Client,
    spec: &ArgoCdSpec,
    rendered: &Rendered,
    opts: &InstallOptions,
    progress: &(dyn Fn(ApplyEvent) + Send + Sync),
) -> Result<Installed, ArgoCdError> {
    let existing = read_existing(client, &spec.namespace).await?;
    let redis = existing
        .redis_password
        .clone()
        .unwrap_or_else(random_password);
    let admin = match &spec.admin_password {
        Some(p) => Some(admin_hash(p, existing.admin.as_ref(), &opts.now)?),
        None => None,
    };
    let manifests = rendered.with_credentials(&redis, admin.as_ref());
    let manager = ResourceManager::new(client.clone(), spec.namespace.clone());
    let apply_opts = ApplyOptions {
        field_manager: opts.field_manager.clone(),
        dry_run: opts.dry_run,
        wait: !opts.dry_run,
        timeout: spec.timeout,
        applyset: Some(
            ApplySet::new(APPLYSET, spec.namespace.clone()).map_err(apply::ApplyError::from)?,
        ),
        prune: true,
        ..ApplyOptions::default()
    };
    let report = manager
        .apply(bundle(&spec.namespace, manifests), &apply_opts, progress)
        .await?;
    if opts.dry_run {
        return Ok(Installed {
            report,
            admin_password: AdminPassword::Unknown,
            url: ArgoCdUrl {
                url: String::new(),
                note: Some("dry run: nothing was installed".to_string()),
            },
        });
    }
    let admin_password =
        admin_password(client, &spec.namespace, spec.admin_password.as_ref()).await?;
    let source = url_source(&spec.values, rendered.merged_values());
    let url = url(client, &spec.namespace, &source, opts.lb_wait).await?;
    Ok(Installed {
        report,
        admin_password,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_prefers_ingress_then_domain_then_load_balancer() {
        let merged_default = json!({"global": {"domain": "argocd.example.com"}, "server": {"ingress": {"enabled": false}, "service": {"type": "ClusterIP"}}});
        assert_eq!(
            url_source(&json!({}), &merged_default),
            UrlSource::InCluster
        );
        let ingress = json!({"global": {"domain": "cd.acme.io"}, "server": {"ingress": {"enabled": true, "hostname": ""}}});
        assert_eq!(
            url_source(&json!({}), &ingress),
            UrlSource::Domain("cd.acme.io".into())
        );
        let user = json!({"global": {"domain": "cd.shop.io"}});
        assert_eq!(
            url_source(&user, &merged_default),
            UrlSource::Domain("cd.shop.io".into())
        );
        let lb = json!({"server": {"service": {"type": "LoadBalancer"}}, "configs": {"params": {"server.insecure": true}}});
        assert_eq!(
            url_source(&json!({}), &lb),
            UrlSource::LoadBalancer { scheme: "http" }
        );
    }

    #[test]
    fn admin_hash_is_reused_when_it_matches() {
        let pw = Secret::new("correct horse".to_string());
        let first = admin_hash(&pw, None, "2026-01-01T00:00:00Z").unwrap();
        assert!(bcrypt::verify("correct horse", first.hash.expose()).unwrap());
        let again = admin_hash(&pw, Some(&first), "2027-01-01T00:00:00Z").unwrap();
        assert_eq!(again.hash.expose(), first.hash.expose());
        assert_eq!(again.mtime, "2026-01-01T00:00:00Z");
        let other = Secret::new("another".to_string());
        let changed = admin_hash(&other, Some(&first), "2027-01-01T00:00:00Z").unwrap();
        assert_ne!(changed.hash.expose(), first.hash.expose());
        assert_eq!(changed.mtime, "2027-01-01T00:00:00Z");
    }

    #[test]
    fn random_passwords_differ_and_are_long() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a.expose(), b.expose());
    }
}
