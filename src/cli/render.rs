//! `tendril render`: render a chart (the embedded Argo CD chart by default)
//! to multi-document YAML (or, with `-o json`, a JSON `v1/List`) on stdout,
//! into a file with `--output-file`, or one file per template into a
//! directory with `--output-dir`, as `helm template --output-dir` does (see
//! [`tendril::outfile`] for how files, links, FIFOs and devices are written).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use tendril::Secret;
use tendril::chart::{
    Capabilities, Chart, ChartError, RenderOptions, RenderedManifest, Values, manifests_to_yaml,
};

use tendril::outfile::{self, Mode};

use super::format::OutputFormat;

/// The embedded chart rendered when `--chart` is not given.
pub const DEFAULT_CHART: &str = "argocd";

/// Flags of `tendril render` (boxed: they are large, and `Command` is an enum).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

/// The flags themselves.
#[derive(clap::Args)]
pub struct Flags {
    /// Chart to render: a directory or a .tgz archive (default: the embedded
    /// Argo CD chart).
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
    /// Values file, merged over the chart's defaults; repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Set a value (Helm syntax: a.b=x, a[0]=x, a={x,y}, a\.b=x); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a value and keep it a string (no type inference); repeatable,
    /// applied after every --set.
    #[arg(long = "set-string", value_name = "KEY=VALUE")]
    pub set_string: Vec<String>,
    /// Namespace of the release, given to namespaced objects that name none.
    #[arg(long, short = 'n', default_value = "argocd")]
    pub namespace: String,
    /// Release name.
    #[arg(long, default_value = "argocd")]
    pub release: String,
    /// Redis password (templates read it as `inputs.redis_password`); a
    /// random one is drawn when not given.
    #[arg(long, env = "TENDRIL_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Extra template input `inputs.NAME`; repeatable.
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub input: Vec<String>,
    /// Kubernetes version templates see as `capabilities.kube_version`.
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// Extra API versions templates see in `capabilities.api_versions`; repeatable.
    #[arg(long = "api-versions", value_name = "GROUP/VERSION")]
    pub api_versions: Vec<String>,
    /// Refuse values the chart does not act on (unsupported or unknown keys)
    /// instead of warning about them.
    #[arg(long)]
    pub strict: bool,
    /// Output format: `yaml` (or `text`) multi-document YAML, `json` one `v1/List`.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "output_dir")]
    pub output_file: Option<PathBuf>,
    /// Write one YAML file per template into DIR/CHART/ (e.g.
    /// DIR/argo-cd/templates/x.yaml), as `helm template --output-dir` does.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// A finished render and where it goes.
enum Rendered {
    /// One document on stdout.
    Stdout(String),
    /// One document in a file.
    File(PathBuf, String),
    /// One YAML file per template: the files' paths (under `--output-dir`) and texts.
    Dir(Vec<(PathBuf, String)>),
}

/// Draws a random alphanumeric password of `len` characters.
pub fn random_password(len: usize) -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn render(args: Flags) -> Result<Rendered, RenderError> {
    let chart = match &args.chart {
        Some(path) => Chart::load(path.clone())?,
        None => Chart::embedded(DEFAULT_CHART)?,
    };
    if args.output_dir.is_some() && args.output == OutputFormat::Json {
        return Err(RenderError::Usage(
            "--output-dir writes YAML files, one per template; drop `-o json` or use --output-file"
                .into(),
        ));
    }
    let mut values = Values::new();
    for file in &args.values {
        values.merge_file(file)?;
    }
    for expr in &args.set {
        values.set(expr, false)?;
    }
    for expr in &args.set_string {
        values.set(expr, true)?;
    }
    for warning in &chart.check_values(&values).enforce(args.strict)? {
        eprintln!("warning: {warning}");
    }
    let mut caps = Capabilities::default();
    if let Some(v) = args.kube_version {
        caps.kube_version = v;
    }
    caps.api_versions.extend(args.api_versions);
    let redis = args.redis_password.unwrap_or_else(|| random_password(16));
    let mut opts = RenderOptions::new(args.release, args.namespace)
        .with_values(values)
        .with_capabilities(caps)
        .with_input("redis_password", Secret::new(redis));
    for kv in &args.input {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(ChartError::Set {
                expr: kv.clone(),
                reason: "--input needs NAME=VALUE".to_string(),
            }
            .into());
        };
        opts = opts.with_input(k, Secret::new(v.to_string()));
    }
    let manifests = chart.render(&opts)?;
    let text = || match args.output {
        OutputFormat::Json => as_json_list(&manifests),
        OutputFormat::Text | OutputFormat::Yaml => Ok(manifests_to_yaml(&manifests)),
    };
    let rendered = match (&args.output_file, &args.output_dir) {
        (Some(file), _) => Rendered::File(file.clone(), text()?),
        (None, Some(dir)) => {
            let base = dir.join(&chart.metadata.name);
            let files = per_template(&manifests)?;
            Rendered::Dir(files.into_iter().map(|(p, t)| (base.join(p), t)).collect())
        }
        (None, None) => Rendered::Stdout(text()?),
    };
    // The process ends right after printing: freeing the compiled templates
    // and every parsed object one allocation at a time would only delay that.
    std::mem::forget(chart);
    std::mem::forget(manifests);
    Ok(rendered)
}

/// What can go wrong in `tendril render`.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Output(#[from] super::format::OutputError),
    #[error(transparent)]
    File(#[from] tendril::outfile::OutfileError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The objects as one JSON `v1/List`, as `kubectl get -o json` prints several.
fn as_json_list(manifests: &[RenderedManifest]) -> Result<String, RenderError> {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": manifests.iter().map(|m| m.object.as_ref()).collect::<Vec<_>>(),
    });
    Ok(OutputFormat::Json.document(&list)?.unwrap_or_default())
}

/// The manifests grouped by the template they came from, in order: (relative path, YAML).
fn per_template(manifests: &[RenderedManifest]) -> Result<Vec<(PathBuf, String)>, RenderError> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for m in manifests {
        let path = PathBuf::from(&m.source);
        if !path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(RenderError::Usage(format!(
                "the chart file `{}` has a path that cannot be written under --output-dir",
                m.source
            )));
        }
        let text = manifests_to_yaml(std::slice::from_ref(m));
        match files.iter_mut().find(|(p, _)| *p == path) {
            Some((_, yaml)) => yaml.push_str(&text),
            None => files.push((path, text)),
        }
    }
    Ok(files)
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), RenderError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| RenderError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    // the output holds the Redis password: 0600; `-`, FIFOs and devices
    // (`/dev/null`) are written through, never replaced
    Ok(outfile::write(path, text.as_bytes(), Mode::Secret)?)
}

fn write_all(rendered: Rendered) -> Result<(), RenderError> {
    match rendered {
        Rendered::Stdout(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(RenderError::Output(super::format::OutputError::Stdout(e)))
                }
                _ => Ok(()),
            }
        }
        Rendered::File(path, text) => write_file(&path, &text),
        Rendered::Dir(files) => files.iter().try_for_each(|(p, t)| write_file(p, t)),
    }
}

/// Runs `tendril render`.
pub fn run(args: Args) -> ExitCode {
    match render(*args.flags).and_then(write_all) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
