//! `tendril apply`: server-side apply manifests in stages, optionally waiting until ready.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tendril::apply::{
    self, Action, ApplyEvent, ApplyOptions, ApplyReport, ApplySet, ObjectError, ReadinessOptions,
    ResourceManager, Status,
};
use tendril::appofapps::ApplicationReadiness;
use tendril::kubeconfig::KubeconfigSource;

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
    #[arg(long, default_value = "5m", value_parser = tendril::job::parse_duration)]
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
    /// Record the bundle in this apply set (a Secret in the namespace, as
    /// `kubectl apply --prune --applyset NAME` uses); requires --prune.
    #[arg(long, value_name = "NAME", requires = "prune")]
    applyset: Option<String>,
    /// Delete members of the apply set that the bundle no longer holds; requires --applyset.
    #[arg(long, requires = "applyset")]
    prune: bool,
    /// Applies in flight at the same time.
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
    /// `text` (summary table on stderr), `json` or `yaml` (the report on stdout as well).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: super::format::OutputFormat,
}

/// Errors of the command itself (the apply module has its own).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Kubeconfig(#[from] tendril::kubeconfig::KubeconfigError),
    #[error("applyset: {0}")]
    ApplySet(#[source] apply::InventoryError),
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
        print_summary(r, tendril::logging::api_requests_sent());
        print_hints(r);
        if let Err(e) = args.output.print(r) {
            eprintln!("error: {e}");
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
    let client = KubeconfigSource::resolve(args.kubeconfig.as_deref())?
        .client(
            args.context.as_deref(),
            &tendril::kubeconfig::ClientOptions::with_timeout(args.timeout),
        )
        .await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let applyset = match &args.applyset {
        Some(name) => {
            Some(ApplySet::new(name.clone(), namespace.clone()).map_err(CliError::ApplySet)?)
        }
        None => None,
    };
    let manager = ResourceManager::new(client, namespace);
    let mut readiness = ReadinessOptions {
        load_balancers: args.wait_load_balancers,
        ..ReadinessOptions::default()
    };
    if args.wait_applications {
        readiness = readiness.with_rule(ApplicationReadiness);
    }
    let opts = ApplyOptions {
        field_manager: args.field_manager.clone(),
        force_conflicts: args.force_conflicts,
        dry_run: args.dry_run,
        wait: args.wait,
        timeout: args.timeout,
        concurrency: usize::from(args.concurrency),
        recreate_immutable: args.recreate_immutable,
        readiness,
        applyset,
        prune: args.prune,
    };
    Ok(manager.apply(manifests, &opts, &show_progress).await?)
}

fn show_progress(event: ApplyEvent) {
    let line = match event {
        ApplyEvent::Planned { objects, waves } => format!("{objects} objects in {waves} waves"),
        ApplyEvent::Applied {
            object,
            action: Action::Failed,
            error,
        } => format!(
            "failed     {object}: {}",
            error
                .map(|e| e.to_string())
                .unwrap_or_else(|| "unknown error".into())
        ),
        ApplyEvent::Applied {
            object,
            action: Action::Pruned,
            ..
        } => format!("pruned     {object}"),
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

/// What to pass to get past the failures the report shows.
fn print_hints(report: &ApplyReport) {
    let has = |f: fn(&ObjectError) -> bool| {
        report
            .objects
            .iter()
            .any(|o| o.error.as_ref().is_some_and(f))
    };
    if has(|e| matches!(e, ObjectError::Conflict { .. })) {
        eprintln!("hint: pass --force-conflicts to take the conflicting fields over");
    }
    if has(|e| matches!(e, ObjectError::Immutable { .. })) {
        eprintln!("hint: pass --recreate-immutable to delete and create such objects again");
    }
    if report.not_ready().count() > 0 {
        eprintln!("hint: raise --timeout if the objects only need more time");
    }
}

fn print_summary(report: &ApplyReport, requests: u64) {
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
                status = e.to_string();
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
        "\n{} objects: {} created, {} configured, {} unchanged, {} recreated, {} pruned, {} failed, {} skipped; applied in {} ms ({} waves){}; {requests} API requests",
        report.objects.len(),
        report.count(Action::Created),
        report.count(Action::Configured),
        report.count(Action::Unchanged),
        report.count(Action::Recreated),
        report.count(Action::Pruned),
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
