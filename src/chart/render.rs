//! Rendering a chart with Tera.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::manifest::{self, Manifest};
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

/// Maps a Tera error to a [`ChartError::Template`], naming the file and line.
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
fn render_template(
    tera: &tera::Tera,
    path: &str,
    ctx: &tera::Context,
) -> Result<String, ChartError> {
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

/// A chart's compiled templates, kept for the next render: one Tera instance,
/// or two when a render compiled the manifest templates in two halves on two
/// threads (see [`render_documents`]); every helper (`_` file) is in each
/// instance so components resolve everywhere. `owner` tells which instance
/// holds a template.
#[derive(Debug)]
pub(crate) struct Compiled {
    instances: Vec<tera::Tera>,
    owner: HashMap<String, usize>,
}

fn new_tera() -> tera::Tera {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&'static str>::new());
    super::filters::register(&mut tera);
    tera
}

fn compile_set<'a>(files: impl Iterator<Item = &'a ChartFile>) -> Result<tera::Tera, tera::Error> {
    let mut tera = new_tera();
    tera.add_raw_templates(files.map(|t| (t.path.as_str(), t.text.as_str())))?;
    Ok(tera)
}

/// Compiles every template (but NOTES.txt) into one instance.
fn compile_all(chart: &Chart) -> Result<Compiled, ChartError> {
    let all = chart
        .templates
        .iter()
        .filter(|t| t.path != "templates/NOTES.txt");
    // Syntax errors name their file; errors across files (an unknown
    // component, a circular include) name the templates directory.
    let tera = compile_set(all).map_err(|e| template_error(&e, "templates/"))?;
    let owner = chart
        .templates
        .iter()
        .map(|t| (t.path.clone(), 0))
        .collect();
    Ok(Compiled {
        instances: vec![tera],
        owner,
    })
}

/// The chart's templates compiled: by an earlier render, or now into one instance.
fn compiled(chart: &Chart) -> Result<&Compiled, ChartError> {
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

fn context(chart: &Chart, opts: &RenderOptions) -> tera::Context {
    let values = chart.values_for(opts);
    let (major, minor) = kube_parts(&opts.capabilities.kube_version);
    let mut ctx = tera::Context::new();
    ctx.insert("values", &values);
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
    let mut ctx = context(chart, opts);
    let mut out = Vec::new();
    for t in chart.templates.iter().filter(|t| is_rendered(&t.path)) {
        let index = compiled.owner.get(&t.path).copied().unwrap_or(0);
        let tera = &compiled.instances[index];
        ctx.insert(
            "template",
            &json!({ "name": t.path, "base_path": "templates" }),
        );
        let text = render_template(tera, &t.path, &ctx)?;
        out.push((t.path.clone(), text));
    }
    Ok(out)
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
type Doc = (String, serde_json::Value, bool);

/// The chart's `crds/` files parsed, (path, documents) in path order: parsed
/// on first use, or precomputed at build time for an embedded chart.
fn crd_documents(chart: &Chart) -> Result<&[(String, Vec<serde_json::Value>)], ChartError> {
    if let Some(docs) = chart.crd_documents.get() {
        return Ok(docs);
    }
    let mut parsed = Vec::with_capacity(chart.crds.len());
    for crd in &chart.crds {
        parsed.push((
            crd.path.clone(),
            manifest::parse_documents(&crd.text, &crd.path)?,
        ));
    }
    Ok(chart.crd_documents.get_or_init(|| parsed))
}

/// The templates rendered as manifests, with their index in
/// `chart.templates` (which is in path order).
fn manifest_templates(chart: &Chart) -> Vec<(usize, &ChartFile)> {
    chart
        .templates
        .iter()
        .enumerate()
        .filter(|(_, t)| is_rendered(&t.path))
        .collect()
}

/// What a render produced: per template, its index in `chart.templates`, its
/// path and its documents, in template order.
type Rendered = Vec<(usize, String, Vec<serde_json::Value>)>;

/// The work shared by the threads of a render. Each thread renders the
/// templates of its compiled instance and queues the text; every thread then
/// parses queued text until none is left and no thread is still rendering. So
/// a thread that finishes rendering early parses what the others rendered,
/// and the threads finish together.
struct Pipeline {
    state: std::sync::Mutex<PipelineState>,
    queued: std::sync::Condvar,
}

struct PipelineState {
    /// Rendered text waiting to be parsed: (index, path, text).
    waiting: std::collections::VecDeque<(usize, String, String)>,
    /// Threads that have not finished rendering.
    rendering: usize,
    /// Parsed templates.
    done: Rendered,
    /// Errors, with the index of the template they belong to.
    errors: Vec<(usize, ChartError)>,
}

/// Counts a thread out of the renderers when dropped, even by a panic, so no
/// thread waits for text that will never come.
struct Renderer<'a>(&'a Pipeline);

impl Drop for Renderer<'_> {
    fn drop(&mut self) {
        self.0.lock().rendering -= 1;
        self.0.queued.notify_all();
    }
}

impl Pipeline {
    /// A pipeline that `renderers` threads will render into.
    fn new(renderers: usize) -> Self {
        Pipeline {
            state: std::sync::Mutex::new(PipelineState {
                waiting: std::collections::VecDeque::new(),
                rendering: renderers,
                done: Vec::new(),
                errors: Vec::new(),
            }),
            queued: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipelineState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renders `templates` with `tera` (or nothing when it failed to
    /// compile), queueing each text; stops at the first error.
    fn render(
        &self,
        tera: Option<&tera::Tera>,
        templates: &[(usize, &ChartFile)],
        ctx: &tera::Context,
    ) {
        let _counted = Renderer(self);
        let Some(tera) = tera else { return };
        let mut ctx = ctx.clone();
        for (index, t) in templates {
            ctx.insert(
                "template",
                &json!({ "name": t.path, "base_path": "templates" }),
            );
            match render_template(tera, &t.path, &ctx) {
                Ok(text) => {
                    self.lock()
                        .waiting
                        .push_back((*index, t.path.clone(), text));
                    self.queued.notify_one();
                }
                Err(e) => {
                    self.lock().errors.push((*index, e));
                    return;
                }
            }
        }
    }

    /// Parses queued text until there is none and nothing is being rendered.
    fn parse(&self) {
        loop {
            let next = {
                let mut state = self.lock();
                loop {
                    if let Some(item) = state.waiting.pop_front() {
                        break Some(item);
                    }
                    if state.rendering == 0 {
                        break None;
                    }
                    state = self
                        .queued
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let Some((index, path, text)) = next else {
                return;
            };
            let parsed = manifest::parse_documents(&text, &path);
            let mut state = self.lock();
            match parsed {
                Ok(docs) => state.done.push((index, path, docs)),
                Err(e) => state.errors.push((index, e)),
            }
        }
    }

    /// The parsed templates in order, or the error of the earliest template
    /// that failed. Each thread renders its templates in order up to its
    /// first error, so which error that is does not depend on timing.
    fn finish(self) -> Result<Rendered, ChartError> {
        let state = self
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, e)) = state.errors.into_iter().min_by_key(|(index, _)| *index) {
            return Err(e);
        }
        let mut done = state.done;
        done.sort_by_key(|(index, ..)| *index);
        Ok(done)
    }
}

/// Joins a render thread; a panic in it is resumed here.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Renders and parses every manifest template on two threads. Compiling is
/// split: each thread compiles the helpers and half of the templates (by
/// size), then renders that half; parsing is shared (see [`Pipeline`]). The
/// result does not depend on the threads: documents come back in file order,
/// and of two errors the one from the earlier file is reported.
fn render_documents(chart: &Chart, ctx: &tera::Context) -> Result<Rendered, ChartError> {
    let templates = manifest_templates(chart);
    if let Some(compiled) = chart.compiled.get() {
        return render_compiled(compiled, &templates, ctx);
    }
    // A handful of templates is not worth compiling the helpers twice.
    if templates.len() < 4 {
        return render_compiled(compiled(chart)?, &templates, ctx);
    }
    let helpers: Vec<&ChartFile> = chart
        .templates
        .iter()
        .filter(|t| is_helper(&t.path))
        .collect();
    let (first, second) = templates.split_at(half_by_size(&templates));
    let pipeline = Pipeline::new(2);
    let compile_render_parse = |half: &[(usize, &ChartFile)]| {
        let tera = compile_set(helpers.iter().copied().chain(half.iter().map(|(_, t)| *t)));
        pipeline.render(tera.as_ref().ok(), half, ctx);
        pipeline.parse();
        tera
    };
    let (a, b) = std::thread::scope(|s| {
        let later = s.spawn(|| compile_render_parse(second));
        (compile_render_parse(first), join(later))
    });
    match (a, b) {
        (Ok(tera_a), Ok(tera_b)) => {
            let mut owner = HashMap::new();
            for (_, t) in first {
                owner.insert(t.path.clone(), 0);
            }
            for (_, t) in second {
                owner.insert(t.path.clone(), 1);
            }
            let _ = chart.compiled.set(Compiled {
                instances: vec![tera_a, tera_b],
                owner,
            });
            pipeline.finish()
        }
        // A half may fail to compile only because it lacks a template the
        // other half holds (an include across halves), or for a real error:
        // compile everything together, which either works or reports it.
        _ => render_compiled(compiled(chart)?, &templates, ctx),
    }
}

/// Renders and parses with templates compiled before: one rendering thread
/// per compiled instance, and a second thread to parse when there is only one.
fn render_compiled(
    compiled: &Compiled,
    templates: &[(usize, &ChartFile)],
    ctx: &tera::Context,
) -> Result<Rendered, ChartError> {
    let owned_by = |i: usize| -> Vec<(usize, &ChartFile)> {
        templates
            .iter()
            .filter(|(_, t)| compiled.owner.get(&t.path).copied().unwrap_or(0) == i)
            .copied()
            .collect()
    };
    let pipeline = Pipeline::new(compiled.instances.len());
    std::thread::scope(|s| {
        let pipeline = &pipeline;
        let mut helpers = Vec::new();
        for (i, tera) in compiled.instances.iter().enumerate().skip(1) {
            let mine = owned_by(i);
            helpers.push(s.spawn(move || {
                pipeline.render(Some(tera), &mine, ctx);
                pipeline.parse();
            }));
        }
        if helpers.is_empty() {
            helpers.push(s.spawn(|| pipeline.parse()));
        }
        pipeline.render(compiled.instances.first(), &owned_by(0), ctx);
        pipeline.parse();
        helpers.into_iter().for_each(join);
    });
    pipeline.finish()
}

/// The index that splits `templates` into two halves of about the same text size.
fn half_by_size(templates: &[(usize, &ChartFile)]) -> usize {
    let total: usize = templates.iter().map(|(_, t)| t.text.len()).sum();
    let mut acc = 0;
    templates
        .iter()
        .position(|(_, t)| {
            acc += t.text.len();
            acc * 2 >= total
        })
        .map_or(templates.len(), |i| i + 1)
}

pub(crate) fn render(chart: &Chart, opts: &RenderOptions) -> Result<Vec<Manifest>, ChartError> {
    check_kube_version(chart, opts)?;
    let ctx = context(chart, opts);
    // The CRDs are plain files: on a thread of their own while the templates
    // render, they are parsed (unless they were before, or at build time) and
    // copied into this render's documents.
    let crd_docs = || -> Result<Vec<Doc>, ChartError> {
        let mut docs = Vec::new();
        for (path, objects) in crd_documents(chart)? {
            docs.extend(objects.iter().map(|o| (path.clone(), o.clone(), true)));
        }
        Ok(docs)
    };
    let (crds, rendered) = std::thread::scope(|s| {
        let crds = s.spawn(crd_docs);
        let rendered = render_documents(chart, &ctx);
        (join(crds), rendered)
    });
    let mut docs = crds?;
    for (_, path, objects) in rendered? {
        docs.extend(objects.into_iter().map(|o| (path.clone(), o, false)));
    }

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
        let m = Manifest::from_object(obj, &source, &opts.namespace, &cluster_kinds)?;
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
    fn helpers_and_notes_are_not_rendered() {
        assert!(!is_rendered("templates/_helpers.tpl"));
        assert!(!is_rendered("templates/sub/_x.yaml"));
        assert!(!is_rendered("templates/NOTES.txt"));
        assert!(is_rendered("templates/deploy.yaml"));
    }
}
