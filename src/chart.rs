//! Chart archives (.tgz), values merging, Tera rendering, manifest parsing.
//!
//! A chart is a directory (or a `.tgz` of one) with `Chart.yaml`,
//! `values.yaml`, `templates/` (Tera templates; files whose name starts with
//! `_` hold shared components and are not rendered as manifests) and `crds/`
//! (plain YAML, never templated). This module knows nothing about any
//! particular chart: the charts under `templates/` in the source tree are
//! packed at build time and reachable by directory name through
//! [`Chart::embedded`].
//!
//! ```no_run
//! use tendril::chart::{Chart, RenderOptions, Values, manifests_to_yaml};
//!
//! # fn main() -> Result<(), tendril::chart::ChartError> {
//! let chart = Chart::load("fixtures/charts/basic")?;
//! let mut user = Values::new();
//! user.set("replicas=3", false)?;
//! let opts = RenderOptions::new("demo", "default").with_values(user);
//! let manifests = chart.render(&opts)?;
//! print!("{}", manifests_to_yaml(&manifests));
//! # Ok(()) }
//! ```
//!
//! A [`Chart`] compiles its templates once, on [`Chart::compile`] or the first
//! render, and keeps them: rendering many value sets with one loaded chart
//! (a snapshot-test suite, a deploy that renders once and reuses the result)
//! pays for loading and compiling once. See [`Chart::render`].

mod embedded;
mod filters;
mod helm_yaml;
mod load;
mod manifest;
pub mod pack;
mod render;
mod semver;
mod set;
mod surface;
mod values;
mod yaml_read;

use std::path::PathBuf;

pub use load::Limits;
pub use manifest::{RenderedManifest, install_rank, is_cluster_scoped, manifests_to_yaml};
pub use render::{Capabilities, DEFAULT_API_VERSIONS, DEFAULT_KUBE_VERSION, RenderOptions};
pub use surface::{KeyPath, ValueWarning, ValueWarnings};
pub use values::{Values, coalesce, merge_into};

/// Errors of the chart module: loading, values, rendering, manifests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The chart archive is malformed or unsafe (path traversal, links leaving
    /// the chart, device files, size limits).
    #[error("chart archive {archive}: {reason}")]
    Archive {
        /// Which archive (path or embedded name).
        archive: String,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// The chart itself is incomplete or inconsistent (missing `Chart.yaml`,
    /// missing name or version, a file that is not UTF-8).
    #[error("chart {chart}: {reason}")]
    Invalid {
        /// Which chart (path or embedded name).
        chart: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A YAML input (Chart.yaml, values.yaml, a `-f` file, a CRD) does not parse.
    #[error("{file}: invalid YAML: {message}")]
    Yaml {
        /// The file (path inside the chart, or the path given by the user).
        file: String,
        /// The parser's message, with the position.
        message: String,
    },
    /// A values file is not a mapping at the top level.
    #[error("{file}: values must be a YAML mapping at the top level, found {found}")]
    ValuesNotMap {
        /// The values file.
        file: String,
        /// What was found instead.
        found: &'static str,
    },
    /// A `--set` expression does not follow the syntax.
    #[error("--set {expr:?}: {reason}")]
    Set {
        /// The expression as given.
        expr: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// A template does not compile or fails while rendering.
    #[error("template {file} line {line}: {message}")]
    Template {
        /// The template's path inside the chart (`templates/x.yaml`).
        file: String,
        /// The 1-based line of the error (0 when unknown).
        line: usize,
        /// Tera's message, with the failing source line.
        message: String,
    },
    /// A rendered document is not a valid Kubernetes object.
    #[error("{file}: {reason}")]
    Manifest {
        /// The template (or CRD file) that produced it.
        file: String,
        /// What is wrong with the object.
        reason: String,
    },
    /// Values the chart does not act on, refused because the render is strict
    /// (`--strict`, `tendril.argocd.strict_values`).
    #[error(
        "{0}; remove these values, or render without strict checking to accept them with a warning"
    )]
    UnsupportedValues(ValueWarnings),
    /// No chart with this name was embedded at build time.
    #[error("no embedded chart named {name:?} (embedded: {available})")]
    NoEmbedded {
        /// The requested name.
        name: String,
        /// The names that exist.
        available: String,
    },
}

/// `Chart.yaml`: the fields tendril reads. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    /// The chart's name (required).
    pub name: String,
    /// The chart's version (required).
    pub version: String,
    /// The version of the application the chart installs.
    #[serde(default)]
    pub app_version: Option<String>,
    /// The Kubernetes versions the chart supports (a semver constraint, informative).
    #[serde(default)]
    pub kube_version: Option<String>,
    /// One-line description.
    #[serde(default)]
    pub description: Option<String>,
}

/// One file of a chart: its path inside the chart and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    /// Path relative to the chart root, `/`-separated (`templates/x.yaml`).
    pub path: String,
    /// The file's content.
    pub text: String,
}

/// A loaded chart, entirely in memory.
#[derive(Debug)]
pub struct Chart {
    /// Where it came from (a path or `embedded:NAME`), for messages.
    pub origin: String,
    /// `Chart.yaml`.
    pub metadata: ChartMetadata,
    /// `values.yaml` (an empty mapping when absent).
    pub default_values: serde_json::Value,
    /// `templates/**`, sorted by path. Files whose name starts with `_` are
    /// helpers; `NOTES.txt` is kept but never rendered.
    pub templates: Vec<ChartFile>,
    /// `crds/**` YAML files, sorted by path.
    pub crds: Vec<ChartFile>,
    /// `surface.yaml`: the keys the chart declares (see [`Chart::check_values`]).
    surface: Option<surface::Surface>,
    /// The `crds/` files parsed: (path, documents), once parsed (or
    /// precomputed at build time for an embedded chart).
    crd_documents: std::sync::OnceLock<render::CrdDocuments>,
    compiled: std::sync::OnceLock<render::Compiled>,
    /// The documents renders have parsed, by their text (see [`Chart::render`]).
    parsed: manifest::ParsedDocuments,
}

impl Chart {
    /// Loads a chart from a directory or a `.tgz` archive, with the default
    /// [`Limits`].
    pub fn load(path: impl Into<PathBuf>) -> Result<Chart, ChartError> {
        load::load_path(&path.into(), &Limits::default())
    }

    /// Loads a chart from the bytes of a `.tgz` archive, in memory, within `limits`.
    /// `origin` names the archive in messages.
    pub fn from_archive(bytes: &[u8], origin: &str, limits: &Limits) -> Result<Chart, ChartError> {
        load::from_files(load::unpack_archive(bytes, origin, limits)?, origin, None)
    }

    /// Builds a chart from files already in memory (paths relative to the
    /// chart root). `origin` names the chart in messages.
    pub fn from_files(files: Vec<(String, Vec<u8>)>, origin: &str) -> Result<Chart, ChartError> {
        load::from_files(files, origin, None)
    }

    /// Loads a chart that was packed into the binary at build time from
    /// `templates/NAME/` of the source tree.
    pub fn embedded(name: &str) -> Result<Chart, ChartError> {
        let bytes = embedded::archive(name).ok_or_else(|| ChartError::NoEmbedded {
            name: name.to_string(),
            available: embedded::names().collect::<Vec<_>>().join(", "),
        })?;
        let origin = format!("embedded:{name}");
        let preparsed = embedded::preparsed(name)
            .map(|json| load::Preparsed::from_json(json, &origin))
            .transpose()?;
        let files = load::unpack_archive(bytes, &origin, &Limits::default())?;
        load::from_files(files, &origin, preparsed)
    }

    /// The `.tgz` bytes of an embedded chart, if one has this name.
    pub fn embedded_archive(name: &str) -> Option<&'static [u8]> {
        embedded::archive(name)
    }

    /// The names of the embedded charts.
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        embedded::names()
    }

    /// Compiles the templates now (a render does it when needed), so a
    /// template error shows before the first render. Compiling is done once
    /// per loaded chart; later calls and renders reuse the result.
    pub fn compile(&self) -> Result<(), ChartError> {
        render::compiled(self).map(|_| ())
    }

    /// Renders the chart: the CRDs from `crds/` then every template, parsed
    /// into validated manifests in install order. Same chart, same options:
    /// same manifests, and the same bytes from [`manifests_to_yaml`].
    ///
    /// The chart remembers the documents it has parsed (bounded): a later
    /// render parses only the documents whose text it has not seen, which
    /// makes rendering many value sets with one chart several times faster
    /// than the first render.
    ///
    /// Load and compile once, render many value sets:
    ///
    /// ```
    /// use tendril::Secret;
    /// use tendril::chart::{Chart, RenderOptions, Values, manifests_to_yaml};
    ///
    /// # fn main() -> Result<(), tendril::chart::ChartError> {
    /// let chart = Chart::embedded("argocd")?;
    /// chart.compile()?;
    /// for replicas in 1..=3 {
    ///     let mut values = Values::new();
    ///     values.set(&format!("server.replicas={replicas}"), false)?;
    ///     assert!(chart.check_values(&values).is_empty());
    ///     let opts = RenderOptions::new("argocd", "argocd")
    ///         .with_values(values)
    ///         .with_input("redis_password", Secret::new("example".to_string()));
    ///     let first = manifests_to_yaml(&chart.render(&opts)?);
    ///     assert_eq!(first, manifests_to_yaml(&chart.render(&opts)?));
    ///     assert!(first.contains(&format!("replicas: {replicas}")));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn render(&self, opts: &RenderOptions) -> Result<Vec<RenderedManifest>, ChartError> {
        render::render(self, opts)
    }

    /// Renders every manifest template to text without parsing it:
    /// `(template path, rendered text)` in path order. Useful to debug a
    /// template whose output is not valid YAML.
    pub fn render_raw(&self, opts: &RenderOptions) -> Result<Vec<(String, String)>, ChartError> {
        render::render_raw(self, opts)
    }

    /// The values in `user` that this chart does not act on: keys its
    /// `values.yaml` does not have, outside the mappings it declares open,
    /// each named by its path. A chart without `surface.yaml` declares no
    /// surface and gives no warning. See `docs/chart.md`.
    pub fn check_values(&self, user: &Values) -> ValueWarnings {
        match &self.surface {
            Some(s) => s.check(user.as_json(), &self.default_values),
            None => ValueWarnings::default(),
        }
    }

    /// The merged values a render with `opts` would see (chart defaults,
    /// then the user's values), without rendering.
    pub fn values_for(&self, opts: &RenderOptions) -> serde_json::Value {
        coalesce(opts.values.as_json().clone(), &self.default_values)
    }
}

/// Packs the chart directory `dir` into a reproducible `.tgz` (see [`pack`]).
pub fn package_dir(dir: &std::path::Path) -> Result<Vec<u8>, ChartError> {
    // Load it first so a broken chart is refused before anything is written.
    load::load_dir(dir)?;
    pack::pack_dir(dir).map_err(|source| ChartError::Io {
        path: dir.to_path_buf(),
        source,
    })
}
