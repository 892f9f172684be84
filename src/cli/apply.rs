//! `tendril apply`: server-side apply manifests in stages, optionally waiting until ready.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tendril::apply::{
    self, Action, ApplyEvent, ApplyOptions, ApplyReport, ReadinessOptions, ResourceManager, Status,
};

/// Flags of `tendril apply`.
#[derive(clap::Args)]
pub struct Args {
    /// Manifest file, directory (its *.yaml, *.yml, *.json files) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
    /// After applying, wait until every object is ready.
    #[arg(long)]
    wait: bool,
    /// Overall limit for applying and waiting, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
    /// Take over fields that other field managers own.
    #[arg(long)]
    force_conflicts: bool,
    /// Ask the server to check everything without persisting it (dryRun=All).
    #[arg(long)]
    dry_run: bool,
    /// Server-side apply field manager.
    #[arg(long, default_value = apply::DEFAULT_FIELD_MANAGER, value_name = "NAME")]
    field_manager: String,
    /// Delete and recreate an object when the server rejects a change to an immutable field.
    #[arg(long)]
    recreate_immutable: bool,
    /// With --wait: a Service of type LoadBalancer must have an ingress address.
    #[arg(long)]
    wait_load_balancers: bool,
    /// With --wait: an Argo CD Application must be Synced and Healthy.
    #[arg(long)]
    wait_applications: bool,
    /// Objects applied at the same time within a wave.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Namespace for namespaced objects that name none (default: the context's, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// `text` (summary table on stderr) or `json` (the report on stdout as well).
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    tendril::job::parse_duration(text)
}

/// Errors of the command itself (the apply module has its own).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Kubeconfig(#[from] tendril::kubeconfig::KubeconfigError),
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
}

/// Runs `tendril apply`.
pub fn run(args: Args) -> ExitCode {
    let manifests = match apply::read_manifests(&args.files) {
        Ok(m) => m,
        Err(e) => return super::fail(&e),
    };
    let rt = super::runtime();
    let result = rt.block_on(execute(&args, manifests));
    let report = match &result {
        Ok(r) => Some(r),
        Err(CliError::Apply(e)) => e.report(),
        Err(_) => None,
    };
    if let Some(r) = report {
        print_summary(r);
        if args.output == "json" {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut out, r);
            let _ = writeln!(out);
        }
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

async fn execute(args: &Args, manifests: Vec<apply::Manifest>) -> Result<ApplyReport, CliError> {
    // refuses insecure-skip-tls-verify and credentials over http://; the
    // connection (TCP + TLS handshake) is bounded by --timeout
    let config = tendril::kubeconfig::config_from_kubeconfig(
        args.kubeconfig.as_deref(),
        args.context.as_deref(),
        &tendril::kubeconfig::ClientOptions::with_timeout(args.timeout),
    )
    .await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(CliError::Client)?;
    let manager = ResourceManager::new(client, namespace);
    let opts = ApplyOptions {
        field_manager: args.field_manager.clone(),
        force_conflicts: args.force_conflicts,
        dry_run: args.dry_run,
        wait: args.wait,
        timeout: args.timeout,
        concurrency: usize::from(args.concurrency),
        recreate_immutable: args.recreate_immutable,
        readiness: ReadinessOptions {
            load_balancers: args.wait_load_balancers,
            applications: args.wait_applications,
        },
    };
    Ok(manager.apply(manifests, &opts, &show_progress).await?)
}

fn show_progress(event: ApplyEvent) {
    let line = match event {
        ApplyEvent::Planned { objects, waves } => format!("{objects} objects in {waves} waves"),
        ApplyEvent::WaveStarted { wave, objects } => {
            format!("wave {}: applying {objects} objects", wave + 1)
        }
        ApplyEvent::Applied {
            object,
            action: Action::Failed,
            error,
        } => format!(
            "failed     {object}: {}",
            error.unwrap_or_else(|| "unknown error".into())
        ),
        ApplyEvent::Applied { .. } => return,
        ApplyEvent::Recreating { object, reason } => {
            format!("recreating {object}: {reason}")
        }
        ApplyEvent::Waiting { objects } => format!("waiting for {objects} objects to be ready"),
        ApplyEvent::Progress { object, reason } => format!("waiting    {object}: {reason}"),
        ApplyEvent::Ready { object } => format!("ready      {object}"),
        ApplyEvent::NotReady { object, reason } => format!("failed     {object}: {reason}"),
    };
    eprintln!("{line}");
}

fn print_summary(report: &ApplyReport) {
    let rows: Vec<(String, String, String, String)> = report
        .objects
        .iter()
        .map(|o| {
            let status = match &o.status {
                Status::NotChecked => "-".to_string(),
                Status::Ready => "ready".to_string(),
                Status::NotReady(r) => format!("not ready: {r}"),
                Status::Failed(r) => format!("failed: {r}"),
            };
            let mut action = o.action.as_str().to_string();
            if report.dry_run && o.action != Action::Failed && o.action != Action::Skipped {
                action.push_str(" (dry run)");
            }
            let mut status = status;
            if let Some(e) = &o.error {
                status = e.clone();
            } else if let Some(n) = &o.note {
                status = n.clone();
            }
            for c in &o.conflicts {
                status.push_str(&format!(
                    "; takes over from {:?}: {}",
                    c.manager,
                    c.fields.join(", ")
                ));
            }
            (
                o.object.to_string(),
                (o.wave + 1).to_string(),
                action,
                status,
            )
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n{:<w0$}  WAVE  {:<w2$}  STATUS", "OBJECT", "ACTION");
    for (object, wave, action, status) in &rows {
        let _ = writeln!(err, "{object:<w0$}  {wave:<4}  {action:<w2$}  {status}");
    }
    let _ = writeln!(
        err,
        "\n{} objects: {} created, {} configured, {} unchanged, {} recreated, {} failed, {} skipped; applied in {} ms ({} waves){}",
        report.objects.len(),
        report.count(Action::Created),
        report.count(Action::Configured),
        report.count(Action::Unchanged),
        report.count(Action::Recreated),
        report.failed().count(),
        report.count(Action::Skipped),
        report.apply_millis,
        report.waves,
        if report.wait_millis > 0 {
            format!(", waited {} ms for readiness", report.wait_millis)
        } else {
            String::new()
        }
    );
}
