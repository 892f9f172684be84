//! `tendril render`: render a chart (the embedded Argo CD chart by default)
//! to multi-document YAML on stdout, or into a file with `-o` (see
//! [`tendril::outfile`] for how files, links, FIFOs and devices are written).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use tendril::Secret;
use tendril::chart::{Capabilities, Chart, ChartError, RenderOptions, Values, manifests_to_yaml};
use tendril::outfile::{self, Mode};

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
    /// Write the YAML to this file instead of stdout: a regular file is
    /// replaced atomically (mode 0600, it holds the Redis password), a
    /// symlink's target is written, `-`, a FIFO or a device is written through.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
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

fn render(args: Flags) -> Result<(String, Option<PathBuf>), ChartError> {
    let chart = match &args.chart {
        Some(path) => Chart::load(path.clone())?,
        None => Chart::embedded(DEFAULT_CHART)?,
    };
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
            });
        };
        opts = opts.with_input(k, Secret::new(v.to_string()));
    }
    let manifests = chart.render(&opts)?;
    let yaml = manifests_to_yaml(&manifests);
    // The process ends right after printing: freeing the compiled templates
    // and every parsed object one allocation at a time would only delay that.
    std::mem::forget(chart);
    std::mem::forget(manifests);
    Ok((yaml, args.output))
}

/// Runs `tendril render`.
pub fn run(args: Args) -> ExitCode {
    match render(*args.flags) {
        Ok((yaml, None)) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
                eprintln!("error: cannot write to stdout: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        // the output holds the Redis password: 0600; `-`, FIFOs and devices
        // (`/dev/null`) are written through, never replaced
        Ok((yaml, Some(path))) => match outfile::write(&path, yaml.as_bytes(), Mode::Secret) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(&e),
        },
        Err(e) => super::fail(&e),
    }
}
