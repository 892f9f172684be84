//! App of Apps rendering from facts.
//!
//! The embedded chart `templates/app-of-apps/` holds the platform AppProject,
//! an optional repository Secret, the root Application pointing at the vine's
//! apps repository, the platform component Applications (AWS Load Balancer
//! Controller, External DNS, External Secrets Operator, Karpenter, Metrics
//! Server) and a default StorageClass. [`render`] fills it from the
//! infrastructure facts and the job's `tendril.apps` settings; infra facts
//! reach each component's chart as `spec.source.helm.valuesObject`.
//!
//! ```
//! use tendril::appofapps::{AppOfApps, AppsSource};
//! use tendril::facts::InfraFacts;
//!
//! let outputs = serde_json::json!({
//!     "eks_cluster_name": {"value": "shop-prod", "type": "string", "sensitive": false},
//!     "eks_cluster_endpoint": {"value": "https://abc.gr7.eu-west-1.eks.amazonaws.com", "type": "string", "sensitive": false},
//! });
//! # let _ = outputs;
//! let spec = AppOfApps::new("argocd", AppsSource::new("https://github.com/acme/shop-apps.git"));
//! assert_eq!(spec.apps.revision, "main");
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Secret;
use crate::apply::{
    self, ApplyError, ApplyEvent, ApplyOptions, ApplyReport, ApplySet, Readiness, ReadinessOptions,
    ReadinessRule, ResourceManager,
};
use crate::chart::{Chart, ChartError, RenderOptions, RenderedManifest, Values};
use crate::facts::InfraFacts;

/// The name of the embedded App of Apps chart.
pub const CHART: &str = "app-of-apps";

/// The platform components the chart knows, by Application name.
pub const COMPONENTS: &[&str] = &[
    "aws-load-balancer-controller",
    "external-dns",
    "external-secrets",
    "karpenter",
    "metrics-server",
];

/// Keys a component's settings in the job may have.
const COMPONENT_KEYS: &[&str] = &["enabled", "version", "namespace", "values"];

/// What can go wrong rendering the App of Apps.
#[derive(Debug, thiserror::Error)]
pub enum AppOfAppsError {
    /// The job names a component the chart does not have.
    #[error(
        "tendril.apps.components.{name}: unknown platform component; the components are {known} (and `storage-class`)"
    )]
    UnknownComponent {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A component's settings have a key that means nothing.
    #[error(
        "tendril.apps.components.{component}.{key}: unknown setting; use `enabled`, `version`, `namespace`, or put chart values under `values`"
    )]
    UnknownSetting {
        /// The component.
        component: String,
        /// The key.
        key: String,
    },
    /// A setting has the wrong type.
    #[error("tendril.apps.components.{component}.{key}: {problem}")]
    BadSetting {
        /// The component.
        component: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// No apps repository was given anywhere.
    #[error(
        "no apps repository: set tendril.apps.repo_url in the job or config_snapshot.repositories.apps_destination_repo"
    )]
    NoRepository,
    /// The chart failed to load or render.
    #[error(transparent)]
    Chart(#[from] ChartError),
}

/// The vine's applications repository, synced by the root Application.
#[derive(Debug, Clone)]
pub struct AppsSource {
    /// Git URL.
    pub repo_url: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Path inside the repository.
    pub path: String,
    /// Credentials for a private repository.
    pub credentials: Option<RepoCredentials>,
}

impl AppsSource {
    /// The repository at `main`, path `apps`, no credentials.
    pub fn new(repo_url: impl Into<String>) -> Self {
        AppsSource {
            repo_url: repo_url.into(),
            revision: "main".to_string(),
            path: "apps".to_string(),
            credentials: None,
        }
    }
}

/// Resolved repository credentials.
#[derive(Debug, Clone)]
pub struct RepoCredentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret<String>,
}

/// What to render: where Argo CD lives, the apps repository, and the job's
/// per-component settings.
#[derive(Debug, Clone)]
pub struct AppOfApps {
    /// Argo CD's namespace.
    pub namespace: String,
    /// The apps repository.
    pub apps: AppsSource,
    /// Per component: `{enabled: false}`, `{version: ...}`, `{values: {...}}`.
    pub components: BTreeMap<String, Value>,
}

impl AppOfApps {
    /// Every component at its defaults.
    pub fn new(namespace: impl Into<String>, apps: AppsSource) -> Self {
        AppOfApps {
            namespace: namespace.into(),
            apps,
            components: BTreeMap::new(),
        }
    }
}

/// The facts as the chart's templates see them (`values.facts`): every key
/// present, unknown values as empty strings.
pub fn facts_values(facts: &InfraFacts) -> Value {
    let c = &facts.cluster;
    let s = |v: Option<&str>| Value::String(v.unwrap_or_default().to_string());
    json!({
        "provider": c.provider.as_str(),
        "cluster": {
            "name": c.name,
            "endpoint": s(c.endpoint.as_ref().map(|e| e.as_str())),
            "arn": s(c.id.as_deref()),
            "region": s(c.region.as_deref()),
        },
        "network": {"vpc_id": s(facts.network.as_ref().map(|n| n.id.as_str()))},
        "dns": {
            "zone_id": s(facts.dns.as_ref().and_then(|d| d.zone.as_deref())),
            "domain": s(facts.dns.as_ref().and_then(|d| d.domain.as_deref())),
        },
        "databases": facts.databases.iter().map(|d| json!({
            "name": d.name,
            "writer_endpoint": d.writer_endpoint,
            "reader_endpoint": s(d.reader_endpoint.as_deref()),
            "credentials_secret": s(d.credentials_secret.as_deref()),
        })).collect::<Vec<_>>(),
        "caches": facts.caches.iter().map(|c| json!({
            "name": c.name,
            "primary_endpoint": c.primary_endpoint,
            "reader_endpoint": s(c.reader_endpoint.as_deref()),
        })).collect::<Vec<_>>(),
    })
}

/// The chart values for a render: facts, apps repository, component overrides.
pub fn values(facts: &InfraFacts, spec: &AppOfApps) -> Result<Value, AppOfAppsError> {
    if spec.apps.repo_url.trim().is_empty() {
        return Err(AppOfAppsError::NoRepository);
    }
    let mut components = Map::new();
    let mut storage_class = json!({});
    for (name, settings) in &spec.components {
        if name == "storage-class" {
            storage_class = json!({"enabled": component_enabled(name, settings)?});
            continue;
        }
        if !COMPONENTS.contains(&name.as_str()) {
            return Err(AppOfAppsError::UnknownComponent {
                name: name.clone(),
                known: COMPONENTS.join(", "),
            });
        }
        components.insert(name.clone(), component_values(name, settings)?);
    }
    let credentials = spec
        .apps
        .credentials
        .as_ref()
        .map(|c| json!({"username": c.username, "password": c.password.expose()}));
    Ok(json!({
        "argocdNamespace": spec.namespace,
        "facts": facts_values(facts),
        "apps": {
            "repoURL": spec.apps.repo_url,
            "revision": spec.apps.revision,
            "path": spec.apps.path,
            "credentials": credentials,
        },
        "components": components,
        "storageClass": storage_class,
    }))
}

fn component_enabled(name: &str, settings: &Value) -> Result<bool, AppOfAppsError> {
    match settings.get("enabled") {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(AppOfAppsError::BadSetting {
            component: name.to_string(),
            key: "enabled".to_string(),
            problem: format!("`{other}` is not true or false"),
        }),
    }
}

fn component_values(name: &str, settings: &Value) -> Result<Value, AppOfAppsError> {
    let Some(map) = settings.as_object() else {
        return Err(AppOfAppsError::BadSetting {
            component: name.to_string(),
            key: "(settings)".to_string(),
            problem: "is not a mapping; give e.g. {enabled: false} or {values: {...}}".to_string(),
        });
    };
    let mut out = Map::new();
    for (key, value) in map {
        if !COMPONENT_KEYS.contains(&key.as_str()) {
            return Err(AppOfAppsError::UnknownSetting {
                component: name.to_string(),
                key: key.clone(),
            });
        }
        let ok = match key.as_str() {
            "enabled" => value.is_boolean(),
            "version" | "namespace" => value.is_string(),
            _ => value.is_object(),
        };
        if !ok {
            let want = match key.as_str() {
                "enabled" => "true or false",
                "version" | "namespace" => "a string",
                _ => "a mapping of chart values",
            };
            return Err(AppOfAppsError::BadSetting {
                component: name.to_string(),
                key: key.clone(),
                problem: format!("must be {want}"),
            });
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(Value::Object(out))
}

/// Renders the App of Apps from the embedded chart.
pub fn render(
    facts: &InfraFacts,
    spec: &AppOfApps,
) -> Result<Vec<RenderedManifest>, AppOfAppsError> {
    let chart = Chart::embedded(CHART)?;
    render_chart(&chart, facts, spec)
}

/// Renders the App of Apps from a given chart (a user's copy of the embedded one).
pub fn render_chart(
    chart: &Chart,
    facts: &InfraFacts,
    spec: &AppOfApps,
) -> Result<Vec<RenderedManifest>, AppOfAppsError> {
    let values = Values::from_json(values(facts, spec)?, "the App of Apps settings")?;
    let opts = RenderOptions::new("app-of-apps", spec.namespace.clone()).with_values(values);
    Ok(chart.render(&opts)?)
}

/// The name of the root Application the chart renders (`apps.name` in its values).
pub const ROOT_APPLICATION: &str = "root";

/// Argo CD's finalizer on an Application: deleting the Application deletes
/// the resources Argo CD created for it first (cascading deletion). The
/// chart puts it on every Application it renders.
pub const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";

/// Argo CD's `Application` kind (`argoproj.io/v1alpha1`, plural `applications`).
pub fn application_resource() -> kube::core::ApiResource {
    let gvk = kube::core::GroupVersionKind::gvk(ARGO_GROUP, "v1alpha1", "Application");
    kube::core::ApiResource::from_gvk_with_plural(&gvk, "applications")
}

/// The apply set the App of Apps is recorded in (a Secret in Argo CD's namespace).
pub const APPLYSET: &str = "tendril-app-of-apps";

/// The API group of Argo CD's kinds (Application, AppProject, ApplicationSet).
pub const ARGO_GROUP: &str = "argoproj.io";

/// Whether a manifest is one of Argo CD's kinds.
pub fn is_argo_object(object: &Value) -> bool {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("argoproj.io/"))
}

/// Whether the cluster serves Argo CD's Application kind in `namespace`
/// (its CRD is installed and the caller may list Applications there).
pub async fn serves_applications(client: &kube::Client, namespace: &str) -> bool {
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &application_resource());
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .is_ok()
}

/// Argo CD's `Application` (argoproj.io) is ready once `Synced` and `Healthy`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplicationReadiness;

impl ReadinessRule for ApplicationReadiness {
    fn judges(&self, group: &str, kind: &str) -> bool {
        (group, kind) == ("argoproj.io", "Application")
    }

    fn judge(&self, obj: &Value, _generation: Option<i64>) -> Readiness {
        let text = |p: &str| apply::readiness::status_text(obj, p);
        let sync = text("/status/sync/status").unwrap_or("Unknown");
        let health = text("/status/health/status").unwrap_or("Unknown");
        if sync == "Synced" && health == "Healthy" {
            return Readiness::Ready;
        }
        let mut out = format!("sync {sync}, health {health}");
        if let Some(m) = text("/status/health/message").filter(|m| !m.is_empty()) {
            out.push_str(&format!(" ({m})"));
        }
        if let Some(phase) = text("/status/operationState/phase")
            && matches!(phase, "Failed" | "Error")
        {
            let msg = text("/status/operationState/message").unwrap_or("");
            out.push_str(&format!("; last sync {phase}: {msg}"));
        }
        Readiness::InProgress(out)
    }
}

/// How to apply the App of Apps.
#[derive(Debug, Clone)]
pub struct ApplyApps {
    /// Server-side dry run.
    pub dry_run: bool,
    /// The field manager.
    pub field_manager: String,
    /// Wait until every Application is Synced and Healthy.
    pub wait: bool,
    /// Limit for applying and waiting.
    pub timeout: std::time::Duration,
}

/// The App of Apps bundle: the rendered objects. Argo CD's Namespace belongs
/// to the Argo CD install's apply set (an object is a member of one set
/// only); in a dry run, where the install created nothing, the bundle carries
/// it too, so the server can check the rest against it.
pub fn bundle(
    namespace: &str,
    manifests: Vec<RenderedManifest>,
    dry_run: bool,
) -> Vec<apply::Manifest> {
    let mut out = Vec::with_capacity(manifests.len() + 1);
    if dry_run {
        out.push(apply::Manifest::new(
            "app-of-apps/namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        ));
    }
    out.extend(
        manifests
            .into_iter()
            .map(|m| apply::Manifest::new(m.source, std::sync::Arc::unwrap_or_clone(m.object))),
    );
    out
}

/// Applies the rendered App of Apps into `namespace`, recorded in the apply
/// set [`APPLYSET`] (Applications and Secrets the chart no longer renders are
/// pruned).
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    manifests: Vec<RenderedManifest>,
    how: &ApplyApps,
    progress: &(dyn Fn(ApplyEvent) + Send + Sync),
) -> Result<ApplyReport, ApplyError> {
    let mut readiness = ReadinessOptions::default();
    if how.wait {
        readiness = readiness.with_rule(ApplicationReadiness);
    }
    let opts = ApplyOptions {
        field_manager: how.field_manager.clone(),
        dry_run: how.dry_run,
        wait: how.wait,
        timeout: how.timeout,
        readiness,
        applyset: Some(ApplySet::new(APPLYSET, namespace)?),
        prune: true,
        ..ApplyOptions::default()
    };
    ResourceManager::new(client.clone(), namespace)
        .apply(bundle(namespace, manifests, how.dry_run), &opts, progress)
        .await
}
