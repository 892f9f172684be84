//! Rendering a chart with Tera.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use super::manifest::{self, RenderedManifest};
use super::{Chart, ChartError, ChartFile, Values};
use crate::Secret;

/// The Kubernetes version templates see when the caller gives none.
pub const DEFAULT_KUBE_VERSION: &str = "v1.34.0";

/// The API versions (group/version) templates see when the caller gives none:
/// the built-in APIs of Kubernetes 1.34.
pub const DEFAULT_API_VERSIONS: &[&str] = &[
    "v1",
    "admissionregistration.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "apiregistration.k8s.io/v1",
    "apps/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "batch/v1",
    "certificates.k8s.io/v1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "events.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1",
    "networking.k8s.io/v1",
    "node.k8s.io/v1",
    "policy/v1",
    "rbac.authorization.k8s.io/v1",
    "resource.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1",
];

/// What templates know about the target cluster (`capabilities` in the context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The Kubernetes version, e.g. `v1.34.0`.
    pub kube_version: String,
    /// The available API group/versions (e.g. `apps/v1`); a template may
    /// also test for `group/version/Kind` entries if the caller lists them.
    pub api_versions: Vec<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            kube_version: DEFAULT_KUBE_VERSION.to_string(),
            api_versions: DEFAULT_API_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Everything a render needs besides the chart.
#[derive(Clone)]
pub struct RenderOptions {
    /// The release name (`release.name`).
    pub release_name: String,
    /// The namespace (`release.namespace`), also given to namespaced objects
    /// that name none.
    pub namespace: String,
    /// User values, merged over the chart's defaults.
    pub values: Values,
    /// Caller-provided strings (`inputs.NAME`), e.g. a generated password.
    /// Secret: never printed by Debug.
    pub inputs: BTreeMap<String, Secret<String>>,
    /// The target cluster's version and APIs.
    pub capabilities: Capabilities,
}

impl std::fmt::Debug for RenderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderOptions")
            .field("release_name", &self.release_name)
            .field("namespace", &self.namespace)
            .field("values", &self.values)
            .field("inputs", &self.inputs.keys().collect::<Vec<_>>())
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl RenderOptions {
    /// Options for release `release_name` in `namespace`, no user values, no
    /// inputs, default capabilities.
    pub fn new(release_name: impl Into<String>, namespace: impl Into<String>) -> Self {
        RenderOptions {
            release_name: release_name.into(),
            namespace: namespace.into(),
            values: Values::new(),
            inputs: BTreeMap::new(),
            capabilities: Capabilities::default(),
        }
    }

    /// Sets the user values.
    pub fn with_values(mut self, values: Values) -> Self {
        self.values = values;
        self
    }

    /// Adds one input (`inputs.NAME` in templates).
    pub fn with_input(mut self, name: impl Into<String>, value: Secret<String>) -> Self {
        self.inputs.insert(name.into(), value);
        self
    }

    /// Sets the capabilities.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
}

/// Whether a template file is a helper (defines components) rather than a manifest.
pub(crate) fn is_helper(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with('_')
}

fn is_rendered(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    !is_helper(path) && base != "NOTES.txt"
}

/// The most text one template may render to: a loop gone wrong (or hostile
/// values) fails naming the template instead of exhausting memory.
pub const MAX_RENDERED_BYTES: usize = 64 << 20;

/// A buffer that refuses to grow past [`MAX_RENDERED_BYTES`].
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered output limit reached"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders one template into memory, at most [`MAX_RENDERED_BYTES`].
fn render_capped(tera: &tera::Tera, path: &str, ctx: &tera::Context) -> Result<String, ChartError> {
    let mut out = Capped {
        buf: Vec::new(),
        over: false,
    };
    match tera.render_to(path, ctx, &mut out) {
        Ok(()) => String::from_utf8(out.buf).map_err(|_| ChartError::Template {
            file: path.to_string(),
            line: 0,
            message: "rendered text is not UTF-8".to_string(),
        }),
        Err(_) if out.over => Err(ChartError::Template {
            file: path.to_string(),
            line: 0,
            message: format!(
                "renders more than {} MiB, far more than any manifest needs; check its loops and the values they iterate over",
                MAX_RENDERED_BYTES >> 20
            ),
        }),
        Err(e) => Err(template_error(&e, path)),
    }
}

/// Maps a Tera error to a [`ChartError::Template`], naming the file and line.
fn template_error(err: &tera::Error, fallback_file: &str) -> ChartError {
    match err.kind() {
        tera::ErrorKind::SyntaxError(report) | tera::ErrorKind::RenderingError(report) => {
            let file = if report.filename().is_empty() {
                fallback_file.to_string()
            } else {
                report.filename().to_string()
            };
            ChartError::Template {
                file,
                line: report.span().start_line,
                message: report.message().to_string(),
            }
        }
        _ => ChartError::Template {
            file: fallback_file.to_string(),
            line: 0,
            message: err.to_string(),
        },
    }
}

/// A chart's templates compiled into one Tera instance (every template but
/// NOTES.txt; helpers included so their components resolve), kept in the
/// chart for the next render.
#[derive(Debug)]
pub(crate) struct Compiled {
    tera: tera::Tera,
    /// The chart's default values as templates read them, converted once:
    /// each render shares what its user values leave alone.
    defaults: tera::Value,
}

/// Compiles every template (but NOTES.txt).
fn compile_all(chart: &Chart) -> Result<Compiled, ChartError> {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&'static str>::new());
    super::filters::register(&mut tera);
    let all = chart
        .templates
        .iter()
        .filter(|t| t.path != "templates/NOTES.txt")
        .map(|t| (t.path.as_str(), t.text.as_str()));
    // Syntax errors name their file; errors across files (an unknown
    // component, a circular include) name the templates directory.
    tera.add_raw_templates(all)
        .map_err(|e| template_error(&e, "templates/"))?;
    Ok(Compiled {
        tera,
        defaults: tera::Value::from_serializable(&chart.default_values),
    })
}

/// The chart's templates compiled: by an earlier call, or now.
pub(crate) fn compiled(chart: &Chart) -> Result<&Compiled, ChartError> {
    if let Some(t) = chart.compiled.get() {
        return Ok(t);
    }
    let t = compile_all(chart)?;
    Ok(chart.compiled.get_or_init(|| t))
}

/// Parses `major` and `minor` out of `v1.34.0`.
fn kube_parts(version: &str) -> (u64, u64) {
    let v = version.trim().trim_start_matches('v');
    let mut it = v.split(['.', '-', '+']);
    let major = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let minor = it
        .next()
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (major, minor)
}

fn context(chart: &Chart, compiled: &Compiled, opts: &RenderOptions) -> tera::Context {
    let values = super::values::coalesce_for_templates(opts.values.as_json(), &compiled.defaults);
    let (major, minor) = kube_parts(&opts.capabilities.kube_version);
    let mut ctx = tera::Context::new();
    ctx.insert_value("values", values);
    ctx.insert(
        "release",
        &json!({
            "name": opts.release_name,
            "namespace": opts.namespace,
            "service": "tendril",
        }),
    );
    ctx.insert(
        "chart",
        &json!({
            "name": chart.metadata.name,
            "version": chart.metadata.version,
            "appVersion": chart.metadata.app_version.clone().unwrap_or_default(),
            "app_version": chart.metadata.app_version.clone().unwrap_or_default(),
        }),
    );
    ctx.insert(
        "capabilities",
        &json!({
            "kube_version": opts.capabilities.kube_version,
            "kube_major": major,
            "kube_minor": minor,
            "api_versions": opts.capabilities.api_versions,
        }),
    );
    let inputs: BTreeMap<&str, &str> = opts
        .inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose().as_str()))
        .collect();
    ctx.insert("inputs", &inputs);
    ctx
}

/// Renders every manifest template to text, without parsing: (path, text).
pub(crate) fn render_raw(
    chart: &Chart,
    opts: &RenderOptions,
) -> Result<Vec<(String, String)>, ChartError> {
    let compiled = compiled(chart)?;
    let mut ctx = context(chart, compiled, opts);
    let mut out = Vec::new();
    for t in chart.templates.iter().filter(|t| is_rendered(&t.path)) {
        let text =
            render_template(compiled, t, &mut ctx).map_err(|e| name_nulled(e, chart, opts))?;
        out.push((t.path.clone(), text));
    }
    Ok(out)
}

/// A template error, with the chart defaults the user's values removed with
/// `null` named: a template that needs one of them fails on a field that is
/// not there, and the values, not the template, are what to change.
fn name_nulled(err: ChartError, chart: &Chart, opts: &RenderOptions) -> ChartError {
    let ChartError::Template {
        file,
        line,
        message,
    } = err
    else {
        return err;
    };
    let nulled = super::values::nulled_defaults(opts.values.as_json(), &chart.default_values);
    if nulled.is_empty() {
        return ChartError::Template {
            file,
            line,
            message,
        };
    }
    ChartError::Template {
        file,
        line,
        message: format!(
            "{message}\n(the values set these chart defaults to null, which removes them: {}; give a value, or leave the key out to keep the default)",
            nulled.join(", ")
        ),
    }
}

/// Renders one manifest template to text.
fn render_template(
    compiled: &Compiled,
    template: &ChartFile,
    ctx: &mut tera::Context,
) -> Result<String, ChartError> {
    ctx.insert(
        "template",
        &json!({ "name": template.path, "base_path": "templates" }),
    );
    render_capped(&compiled.tera, &template.path, ctx)
}

/// Refuses to render for a Kubernetes version outside the chart's `kubeVersion`.
fn check_kube_version(chart: &Chart, opts: &RenderOptions) -> Result<(), ChartError> {
    let Some(constraint) = chart.metadata.kube_version.as_deref() else {
        return Ok(());
    };
    if constraint.trim().is_empty() {
        return Ok(());
    }
    let kube = &opts.capabilities.kube_version;
    match super::semver::satisfies(constraint, kube) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ChartError::Invalid {
            chart: chart.origin.clone(),
            reason: format!(
                "Chart.yaml requires kubeVersion {constraint:?}, which Kubernetes {kube} does not \
                 satisfy; render for a supported version (--kube-version)"
            ),
        }),
        Err(e) => Err(ChartError::Invalid {
            chart: chart.origin.clone(),
            reason: format!("Chart.yaml kubeVersion or --kube-version: {e}"),
        }),
    }
}

/// A parsed document: its file, the object, and whether it came from `crds/`.
type Doc = (String, Arc<serde_json::Value>, bool);

/// A chart's `crds/` files parsed: (path, documents) in path order, shared
/// by every render.
pub(crate) type CrdDocuments = Vec<(String, Vec<Arc<serde_json::Value>>)>;

/// The chart's `crds/` files parsed: on first use, or precomputed at build
/// time for an embedded chart.
fn crd_documents(chart: &Chart) -> Result<&CrdDocuments, ChartError> {
    if let Some(docs) = chart.crd_documents.get() {
        return Ok(docs);
    }
    let mut parsed = Vec::with_capacity(chart.crds.len());
    for crd in &chart.crds {
        let docs = manifest::parse_documents(&crd.text, &crd.path)?;
        parsed.push((crd.path.clone(), docs.into_iter().map(Arc::new).collect()));
    }
    Ok(chart.crd_documents.get_or_init(|| parsed))
}

/// Renders and parses every manifest template, documents seen before taken
/// from `cache`.
fn parse_templates(
    chart: &Chart,
    compiled: &Compiled,
    ctx: &mut tera::Context,
    cache: &mut manifest::DocumentCache,
) -> Result<Vec<Doc>, ChartError> {
    let mut docs = Vec::new();
    for t in chart.templates.iter().filter(|t| is_rendered(&t.path)) {
        let text = render_template(compiled, t, ctx)?;
        let objects = manifest::parse_documents_cached(&text, &t.path, cache)?;
        docs.extend(objects.into_iter().map(|o| (t.path.clone(), o, false)));
    }
    Ok(docs)
}

pub(crate) fn render(
    chart: &Chart,
    opts: &RenderOptions,
) -> Result<Vec<RenderedManifest>, ChartError> {
    check_kube_version(chart, opts)?;
    let compiled = compiled(chart)?;
    let mut docs: Vec<Doc> = Vec::new();
    for (path, objects) in crd_documents(chart)? {
        docs.extend(objects.iter().map(|o| (path.clone(), o.clone(), true)));
    }
    let mut ctx = context(chart, compiled, opts);
    let mut cache = chart.parsed.take();
    let parsed = parse_templates(chart, compiled, &mut ctx, &mut cache);
    chart.parsed.keep(cache);
    docs.extend(parsed.map_err(|e| name_nulled(e, chart, opts))?);

    // Kinds the chart itself declares cluster-scoped (its CRDs).
    let mut cluster_kinds: HashSet<String> = HashSet::new();
    for (_, obj, _) in &docs {
        if obj.get("kind").and_then(|k| k.as_str()) == Some("CustomResourceDefinition")
            && obj.pointer("/spec/scope").and_then(|s| s.as_str()) == Some("Cluster")
            && let Some(kind) = obj.pointer("/spec/names/kind").and_then(|k| k.as_str())
        {
            cluster_kinds.insert(kind.to_string());
        }
    }
    let mut out = Vec::with_capacity(docs.len());
    for (source, obj, from_crds) in docs {
        let m = RenderedManifest::from_shared(obj, &source, &opts.namespace, &cluster_kinds)?;
        if from_crds && m.kind != "CustomResourceDefinition" {
            return Err(ChartError::Manifest {
                file: source,
                reason: format!(
                    "crds/ may only hold CustomResourceDefinitions, found {} {:?}",
                    m.kind, m.name
                ),
            });
        }
        out.push(m);
    }
    manifest::sort_for_install(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_parts_reads_major_minor() {
        assert_eq!(kube_parts("v1.34.0"), (1, 34));
        assert_eq!(kube_parts("1.29+"), (1, 29));
        assert_eq!(kube_parts("v1.30.2-eks-1"), (1, 30));
    }

    #[test]
    fn templates_see_the_values_coalesce_gives() {
        let defaults = json!({
            "a": {"b": 1, "c": {"d": [1, 2]}, "gone": "x"},
            "keep": {"x": "y"},
            "list": [1, 2],
            "scalar": "s",
        });
        let users = [
            json!({}),
            json!({"a": {"b": 2, "gone": null, "new": null, "c": {"d": [3]}}}),
            json!({"a": "replaced", "list": {"now": "a map"}, "scalar": null}),
            json!({"keep": null, "extra": {"deep": [null, {"z": 1}]}, "list": []}),
            json!({"list": null, "a": {"c": null, "b": null}}),
        ];
        let shared = tera::Value::from_serializable(&defaults);
        for user in users {
            let expected = super::super::values::coalesce(user.clone(), &defaults);
            assert_eq!(
                super::super::values::coalesce_for_templates(&user, &shared),
                tera::Value::from_serializable(&expected),
                "user values {user}"
            );
        }
    }

    #[test]
    fn helpers_and_notes_are_not_rendered() {
        assert!(!is_rendered("templates/_helpers.tpl"));
        assert!(!is_rendered("templates/sub/_x.yaml"));
        assert!(!is_rendered("templates/NOTES.txt"));
        assert!(is_rendered("templates/deploy.yaml"));
    }
}
