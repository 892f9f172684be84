//! Running the terraform binary: init, plan, show, apply, output; its JSON event stream.
//!
//! In the manner of hashicorp's terraform-exec: one method per command,
//! options as types, failures as [`TerraformError`] variants classified from
//! terraform's JSON diagnostics (never from stderr prose; stderr is kept for
//! the report).
//!
//! Every command runs
//! - with `-input=false -no-color`, `TF_IN_AUTOMATION=1`, `TF_INPUT=0`,
//!   `CHECKPOINT_DISABLE=1`;
//! - in the working directory given to [`Terraform::new`] (a copy tendril
//!   controls, see [`copy_configuration`]);
//! - with a **controlled environment**: the child starts from an empty
//!   environment, gets the variables in [`INHERITED_ENV`] from tendril's own
//!   environment, and then exactly the variables the caller passes (cloud
//!   credentials among them). Nothing else is inherited — not
//!   `TF_CLI_CONFIG_FILE`, `TF_VAR_*`, `TF_DATA_DIR` or `AWS_*`;
//! - in its own process group, so that cancellation reaches every process it
//!   started (provider plugins, `local-exec` shells): on cancel the group gets
//!   SIGINT, terraform stops at a safe point and writes the state; after
//!   [`Terraform::with_interrupt_grace`] (default 5 minutes) the group is killed;
//! - with a parent-death signal: if tendril dies (even by SIGKILL), terraform
//!   gets SIGINT and stops the same way ([`process::isolate`]).

pub mod backend;
pub mod changes;
pub mod events;
pub mod outputs;
pub mod process;

pub use backend::{Backend, S3Settings};
pub use changes::ChangeSummary;
pub use events::{ChangeCounts, Diagnostic, Event};
pub use outputs::{Output, OutputType, OutputValue, Outputs};

use crate::Secret;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The oldest terraform tendril runs.
pub const MINIMUM_VERSION: Version = Version {
    major: 1,
    minor: 5,
    patch: 0,
};

/// Variables a terraform child takes from tendril's own environment; everything
/// else must be passed explicitly.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    process::SCOPE_ENV,
];

/// How much of terraform's stderr is kept (the tail) for reports.
const STDERR_CAP: usize = 64 * 1024;

/// A caller's sink for live events.
pub type EventSink<'a> = &'a (dyn Fn(Event) + Send + Sync);

/// A terraform version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Parses `1.11.4` (a `-beta1`-style suffix and a leading `v` are ignored).
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or(core);
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        Some(Version {
            major: parts.next()??,
            minor: parts.next().flatten().unwrap_or(0),
            patch: parts.next().flatten().unwrap_or(0),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What can go wrong running terraform.
#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    /// The binary could not be started.
    #[error(
        "cannot run terraform binary `{binary}`: {source}; install terraform ≥ 1.5 on PATH or set tendril.terraform.binary"
    )]
    NotFound {
        /// The binary.
        binary: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The binary is older than [`MINIMUM_VERSION`].
    #[error(
        "terraform {found} at `{binary}` is too old; tendril needs terraform ≥ {MINIMUM_VERSION}"
    )]
    TooOld {
        /// The binary.
        binary: PathBuf,
        /// Its version.
        found: Version,
    },
    /// `terraform version -json` printed something unexpected.
    #[error("terraform {command} printed output tendril cannot read: {problem}")]
    UnexpectedOutput {
        /// The command.
        command: &'static str,
        /// What was wrong.
        problem: String,
    },
    /// A `-json` document terraform printed is not an object.
    #[error(transparent)]
    NotAnObject(#[from] NotAnObject),
    /// A file tendril prepares for terraform could not be written or read.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What tendril was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `Error: Saved plan is stale`: the state changed after the plan was made.
    #[error(
        "terraform apply refused the saved plan {planfile}: it is stale, because the state changed after the plan was made; run a new PLAN job and apply its plan"
    )]
    StalePlan {
        /// The plan file.
        planfile: PathBuf,
        /// terraform's stderr (for the report).
        stderr: String,
    },
    /// The state backend could not be reached (network, endpoint, missing bucket).
    #[error(
        "terraform {command} cannot reach the state backend: {summary}; check the bucket, endpoint and region in tendril.terraform.backend"
    )]
    BackendUnreachable {
        /// The command.
        command: &'static str,
        /// terraform's diagnostic summary and detail.
        summary: String,
        /// terraform's stderr.
        stderr: String,
    },
    /// The state backend refused the credentials.
    #[error(
        "terraform {command} was refused by the state backend: {summary}; check the credentials passed to terraform (the cloud identity, or tendril.terraform.backend access keys)"
    )]
    BackendUnauthorised {
        /// The command.
        command: &'static str,
        /// terraform's diagnostic summary and detail.
        summary: String,
        /// terraform's stderr.
        stderr: String,
    },
    /// Another operation holds the state lock.
    #[error("terraform {command}: the state is locked by another operation{}: {detail}; wait for it to finish, or if it died, run `terraform force-unlock` with the lock ID", lock_id.as_ref().map(|id| format!(" (lock ID {id})")).unwrap_or_default())]
    StateLocked {
        /// The command.
        command: &'static str,
        /// The lock's ID, when terraform reports it.
        lock_id: Option<String>,
        /// terraform's diagnostic detail.
        detail: String,
        /// terraform's stderr.
        stderr: String,
    },
    /// A resource failed to be created, updated or destroyed.
    #[error("terraform {command} failed on {address}: {summary}: {detail}")]
    ResourceFailed {
        /// The command.
        command: &'static str,
        /// The resource address.
        address: String,
        /// The diagnostic summary.
        summary: String,
        /// The diagnostic detail.
        detail: String,
        /// terraform's stderr.
        stderr: String,
    },
    /// The run was cancelled; terraform was interrupted (and killed when it
    /// did not stop within the grace period).
    #[error("terraform {command} was cancelled{}", if *killed { " and killed after the grace period (the state may not have been written; check it before the next run)" } else { "; terraform stopped and wrote its state" })]
    Cancelled {
        /// The command.
        command: &'static str,
        /// Whether the process group had to be killed.
        killed: bool,
        /// terraform's stderr.
        stderr: String,
    },
    /// Any other failure.
    #[error("terraform {command} failed ({status}): {message}")]
    Failed {
        /// The command.
        command: &'static str,
        /// The exit status.
        status: String,
        /// The first error diagnostic, else the last line of stderr.
        message: String,
        /// Every error diagnostic of the run.
        diagnostics: Vec<Diagnostic>,
        /// terraform's stderr.
        stderr: String,
    },
}

/// A `terraform … -json` document that is not the JSON object terraform
/// prints: [`ChangeSummary::from_show_json`] and [`Outputs::from_json`] read
/// only objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`terraform {command} -json` printed {found} where a JSON object was expected; check that `{command}` ran terraform ≥ {MINIMUM_VERSION} and nothing else wrote to its stdout"
)]
pub struct NotAnObject {
    /// The command whose output it is (`show`, `output`).
    pub command: &'static str,
    /// What it printed instead (`an array`, `a string`, …).
    pub found: &'static str,
}

impl NotAnObject {
    /// The error for `v`, which `command` printed.
    pub(crate) fn new(command: &'static str, v: &serde_json::Value) -> NotAnObject {
        use serde_json::Value;
        let found = match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        NotAnObject { command, found }
    }
}

impl TerraformError {
    /// terraform's stderr, when the error comes from a run.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            TerraformError::StalePlan { stderr, .. }
            | TerraformError::BackendUnreachable { stderr, .. }
            | TerraformError::BackendUnauthorised { stderr, .. }
            | TerraformError::StateLocked { stderr, .. }
            | TerraformError::ResourceFailed { stderr, .. }
            | TerraformError::Cancelled { stderr, .. }
            | TerraformError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Whether this is a cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TerraformError::Cancelled { .. })
    }
}

/// Options of [`Terraform::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The state backend.
    pub backend: Backend,
    /// `-reconfigure`: ignore any backend saved in the working directory.
    pub reconfigure: bool,
}

/// Options of [`Terraform::plan`].
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `-out`: where the saved plan goes.
    pub out: PathBuf,
    /// `-var-file` files, in order.
    pub var_files: Vec<PathBuf>,
    /// `-lock-timeout` (default: fail at once when the state is locked).
    pub lock_timeout: Option<Duration>,
    /// `-destroy`: plan to destroy everything.
    pub destroy: bool,
}

/// Options of [`Terraform::apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// `-lock-timeout` (default: fail at once when the state is locked).
    pub lock_timeout: Option<Duration>,
}

/// Options of [`Terraform::destroy`].
#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    /// `-var-file` arguments (destroy evaluates the configuration, so its
    /// required variables need values).
    pub var_files: Vec<PathBuf>,
    /// `-lock-timeout` (default: fail at once when the state is locked).
    pub lock_timeout: Option<Duration>,
}

/// What `terraform plan` reported.
#[derive(Debug, Clone, Default)]
pub struct PlanOutcome {
    /// terraform's change counts.
    pub changes: ChangeCounts,
    /// Warnings.
    pub warnings: Vec<Diagnostic>,
    /// terraform's stderr.
    pub stderr: String,
}

/// What `terraform apply` reported.
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    /// terraform's change counts.
    pub changes: ChangeCounts,
    /// Warnings.
    pub warnings: Vec<Diagnostic>,
    /// terraform's stderr.
    pub stderr: String,
}

/// A terraform binary bound to a working directory and a child environment.
pub struct Terraform {
    binary: PathBuf,
    workdir: PathBuf,
    env: Vec<(String, Secret<String>)>,
    version: Version,
    interrupt_grace: Duration,
}

impl fmt::Debug for Terraform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Terraform")
            .field("binary", &self.binary)
            .field("workdir", &self.workdir)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("version", &self.version)
            .finish()
    }
}

enum Stdout {
    /// Parse each line as a UI event.
    Events,
    /// Keep the text.
    Capture,
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    diagnostics: Vec<Diagnostic>,
    changes: Option<ChangeCounts>,
    stderr: String,
    interrupted: bool,
    killed: bool,
}

impl Terraform {
    /// Binds `binary` (a path, or a name looked up on PATH) to `workdir`,
    /// with `env` passed to every terraform child on top of [`INHERITED_ENV`],
    /// and checks its version (≥ [`MINIMUM_VERSION`]).
    pub async fn new(
        binary: impl Into<PathBuf>,
        workdir: impl Into<PathBuf>,
        env: Vec<(String, Secret<String>)>,
    ) -> Result<Terraform, TerraformError> {
        let mut tf = Terraform {
            binary: binary.into(),
            workdir: workdir.into(),
            env,
            version: MINIMUM_VERSION,
            interrupt_grace: Duration::from_secs(300),
        };
        let never = CancellationToken::new();
        let done = tf
            .exec(
                "version",
                vec!["version".into(), "-json".into()],
                Stdout::Capture,
                None,
                &never,
            )
            .await?;
        let v: serde_json::Value =
            serde_json::from_str(&done.stdout).map_err(|e| TerraformError::UnexpectedOutput {
                command: "version",
                problem: format!("not JSON ({e}); is `{}` terraform?", tf.binary.display()),
            })?;
        let text = v
            .get("terraform_version")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let version = Version::parse(text).ok_or_else(|| TerraformError::UnexpectedOutput {
            command: "version",
            problem: format!("`{text}` is not a version"),
        })?;
        if version < MINIMUM_VERSION {
            return Err(TerraformError::TooOld {
                binary: tf.binary.clone(),
                found: version,
            });
        }
        tf.version = version;
        Ok(tf)
    }

    /// How long terraform may take to stop after SIGINT before its process group is killed.
    pub fn with_interrupt_grace(mut self, grace: Duration) -> Terraform {
        self.interrupt_grace = grace;
        self
    }

    /// The terraform version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The working directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// `terraform init`: writes the backend override file and configures the
    /// backend with `-backend-config` (non-secret settings only).
    pub async fn init(
        &self,
        opts: &InitOptions,
        sink: EventSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), TerraformError> {
        let path = self.workdir.join(backend::OVERRIDE_FILE);
        std::fs::write(&path, opts.backend.override_hcl()).map_err(|source| {
            TerraformError::Io {
                action: "write the backend override file",
                path: path.clone(),
                source,
            }
        })?;
        let mut args: Vec<OsString> =
            vec!["init".into(), "-input=false".into(), "-no-color".into()];
        // `init -json` exists from terraform 1.9; before, errors come as text.
        let json = self.version
            >= (Version {
                major: 1,
                minor: 9,
                patch: 0,
            });
        if json {
            args.push("-json".into());
        }
        if opts.reconfigure {
            args.push("-reconfigure".into());
        }
        let mut backend = opts.backend.clone();
        if let Backend::S3(s3) = &mut backend
            && self.version
                < (Version {
                    major: 1,
                    minor: 10,
                    patch: 0,
                })
        {
            // `use_lockfile` arrived in terraform 1.10.
            s3.use_lockfile = false;
        }
        args.extend(backend.init_args());
        let done = self
            .exec("init", args, Stdout::Events, Some(sink), cancel)
            .await?;
        self.check("init", done, None).map(|_| ())
    }

    /// `terraform plan -out=FILE -json`, events forwarded live to `sink`.
    pub async fn plan(
        &self,
        opts: &PlanOptions,
        sink: EventSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<PlanOutcome, TerraformError> {
        let mut args: Vec<OsString> = vec![
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-json".into(),
        ];
        let mut out = OsString::from("-out=");
        out.push(&opts.out);
        args.push(out);
        for f in &opts.var_files {
            let mut a = OsString::from("-var-file=");
            a.push(f);
            args.push(a);
        }
        args.push(lock_timeout_arg(opts.lock_timeout));
        if opts.destroy {
            args.push("-destroy".into());
        }
        let done = self
            .exec("plan", args, Stdout::Events, Some(sink), cancel)
            .await?;
        let done = self.check("plan", done, None)?;
        Ok(PlanOutcome {
            changes: done.changes.unwrap_or_default(),
            warnings: done.diagnostics,
            stderr: done.stderr,
        })
    }

    /// `terraform show -json PLANFILE`: the plan's resource changes.
    pub async fn show_plan(
        &self,
        planfile: &Path,
        cancel: &CancellationToken,
    ) -> Result<ChangeSummary, TerraformError> {
        let v = self.show_plan_json(planfile, cancel).await?;
        Ok(ChangeSummary::from_show_json(&v)?)
    }

    /// `terraform show -json PLANFILE`, the whole document (planned values,
    /// output changes, resource changes).
    pub async fn show_plan_json(
        &self,
        planfile: &Path,
        cancel: &CancellationToken,
    ) -> Result<serde_json::Value, TerraformError> {
        let args: Vec<OsString> = vec![
            "show".into(),
            "-json".into(),
            "-no-color".into(),
            planfile.as_os_str().to_owned(),
        ];
        let done = self
            .exec("show", args, Stdout::Capture, None, cancel)
            .await?;
        let done = self.check("show", done, None)?;
        serde_json::from_str(&done.stdout).map_err(|e| TerraformError::UnexpectedOutput {
            command: "show",
            problem: format!("not JSON: {e}"),
        })
    }

    /// `terraform apply -json PLANFILE`, events forwarded live to `sink`.
    pub async fn apply(
        &self,
        planfile: &Path,
        opts: &ApplyOptions,
        sink: EventSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<ApplyOutcome, TerraformError> {
        let args: Vec<OsString> = vec![
            "apply".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-json".into(),
            lock_timeout_arg(opts.lock_timeout),
            planfile.as_os_str().to_owned(),
        ];
        let done = self
            .exec("apply", args, Stdout::Events, Some(sink), cancel)
            .await?;
        let done = self.check("apply", done, Some(planfile))?;
        Ok(ApplyOutcome {
            changes: done.changes.unwrap_or_default(),
            warnings: done.diagnostics,
            stderr: done.stderr,
        })
    }

    /// `terraform destroy -auto-approve -json`, with the given variable
    /// files, events forwarded live to `sink`. Everything the state holds is
    /// destroyed; the state itself stays (empty) in its backend.
    pub async fn destroy(
        &self,
        opts: &DestroyOptions,
        sink: EventSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<ApplyOutcome, TerraformError> {
        let mut args: Vec<OsString> = vec![
            "destroy".into(),
            "-auto-approve".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-json".into(),
            lock_timeout_arg(opts.lock_timeout),
        ];
        for f in &opts.var_files {
            let mut arg = OsString::from("-var-file=");
            arg.push(f.as_os_str());
            args.push(arg);
        }
        let done = self
            .exec("destroy", args, Stdout::Events, Some(sink), cancel)
            .await?;
        let done = self.check("destroy", done, None)?;
        Ok(ApplyOutcome {
            changes: done.changes.unwrap_or_default(),
            warnings: done.diagnostics,
            stderr: done.stderr,
        })
    }

    /// `terraform output -json`: typed outputs, sensitive ones as secrets.
    pub async fn output(&self, cancel: &CancellationToken) -> Result<Outputs, TerraformError> {
        let args: Vec<OsString> = vec!["output".into(), "-json".into(), "-no-color".into()];
        let done = self
            .exec("output", args, Stdout::Capture, None, cancel)
            .await?;
        let done = self.check("output", done, None)?;
        let v: serde_json::Value =
            serde_json::from_str(&done.stdout).map_err(|e| TerraformError::UnexpectedOutput {
                command: "output",
                problem: format!("not JSON: {e}"),
            })?;
        Ok(Outputs::from_json(&v)?)
    }

    /// Turns a finished run into success or a classified error.
    fn check(
        &self,
        command: &'static str,
        done: Finished,
        planfile: Option<&Path>,
    ) -> Result<Finished, TerraformError> {
        // A command that finished successfully despite a late interrupt did
        // its work: report it as done, not cancelled.
        if done.status.success() {
            return Ok(done);
        }
        if done.interrupted {
            return Err(TerraformError::Cancelled {
                command,
                killed: done.killed,
                stderr: done.stderr,
            });
        }
        Err(classify(command, done, planfile))
    }

    async fn exec(
        &self,
        command: &'static str,
        args: Vec<OsString>,
        mode: Stdout,
        sink: Option<EventSink<'_>>,
        cancel: &CancellationToken,
    ) -> Result<Finished, TerraformError> {
        if cancel.is_cancelled() {
            return Err(TerraformError::Cancelled {
                command,
                killed: false,
                stderr: String::new(),
            });
        }
        if !self.workdir.is_dir() {
            return Err(TerraformError::Io {
                action: "use as terraform's working directory",
                path: self.workdir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(&args)
            .current_dir(&self.workdir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        process::isolate(&mut cmd, process::GroupSignal::Interrupt);
        for name in INHERITED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v.expose());
        }
        tracing::debug!(
            binary = %self.binary.display(),
            args = ?args,
            workdir = %self.workdir.display(),
            env = ?self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            "running terraform {command}"
        );
        // terraform writes into files, not pipes: if tendril dies, terraform
        // (interrupted by its parent-death signal) can still print while it
        // stops its provisioners and writes the state. A Go program writing
        // to a pipe without a reader dies of SIGPIPE on the spot.
        let out = Capture::create(&self.workdir, command)?;
        cmd.stdout(out.stdout_file()?).stderr(out.stderr_file()?);
        let mut child = cmd.spawn().map_err(|source| TerraformError::NotFound {
            binary: self.binary.clone(),
            source,
        })?;
        let group = process::ProcessGroup::led_by(child.id());
        let mut guard = process::GroupGuard::new(group);
        let signal_group = |signal| {
            if let Some(g) = group {
                g.signal(signal);
            }
        };

        let mut follow = out.follow()?;
        let mut stdout = String::new();
        let mut diagnostics = Vec::new();
        let mut changes = None;
        let mut status: Option<ExitStatus> = None;
        let mut interrupted = false;
        let mut killed = false;
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let grace = tokio::time::sleep_until(far);
        tokio::pin!(grace);

        loop {
            for line in follow.lines(status.is_some()) {
                match mode {
                    Stdout::Capture => {
                        stdout.push_str(&line);
                        stdout.push('\n');
                    }
                    Stdout::Events => {
                        let event = events::parse_line(&line);
                        match &event {
                            Event::Diagnostic(d) => diagnostics.push(d.clone()),
                            Event::ChangeSummary { changes: c, .. } => changes = Some(*c),
                            _ => {}
                        }
                        if let Some(sink) = sink {
                            sink(event);
                        }
                    }
                }
            }
            if status.is_some() {
                break;
            }
            tokio::select! {
                exit = child.wait() => {
                    match exit {
                        Ok(s) => status = Some(s),
                        Err(source) => return Err(TerraformError::Io { action: "wait for terraform", path: self.binary.clone(), source }),
                    }
                    // Whatever terraform left behind in its group (a
                    // `local-exec` command it abandoned on interrupt) goes too.
                    signal_group(process::GroupSignal::Kill);
                    guard.disarm();
                }
                _ = cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    signal_group(process::GroupSignal::Interrupt);
                    grace.as_mut().reset(tokio::time::Instant::now() + self.interrupt_grace);
                }
                _ = &mut grace, if interrupted && !killed => {
                    killed = true;
                    signal_group(process::GroupSignal::Kill);
                }
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
        let stderr = out.stderr_tail();
        drop(out);
        let status = status.ok_or_else(|| TerraformError::UnexpectedOutput {
            command,
            problem: "terraform's exit status was lost".to_string(),
        })?;
        tracing::debug!(%status, interrupted, killed, "terraform {command} exited");
        Ok(Finished {
            status,
            stdout,
            diagnostics,
            changes,
            stderr,
            interrupted,
            killed,
        })
    }
}

/// How often terraform's output file is read while terraform runs.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// The files one terraform command writes its stdout and stderr to (in its
/// working directory; removed when dropped).
struct Capture {
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Capture {
    fn create(workdir: &Path, command: &'static str) -> Result<Capture, TerraformError> {
        let c = Capture {
            stdout: workdir.join(format!(".tendril-terraform-{command}.stdout")),
            stderr: workdir.join(format!(".tendril-terraform-{command}.stderr")),
        };
        for path in [&c.stdout, &c.stderr] {
            create_private(path)?;
        }
        Ok(c)
    }

    fn open(path: &Path, write: bool) -> Result<std::fs::File, TerraformError> {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
            .map_err(|source| TerraformError::Io {
                action: "open terraform's output file",
                path: path.to_path_buf(),
                source,
            })
    }

    fn stdout_file(&self) -> Result<std::fs::File, TerraformError> {
        Capture::open(&self.stdout, true)
    }

    fn stderr_file(&self) -> Result<std::fs::File, TerraformError> {
        Capture::open(&self.stderr, true)
    }

    fn follow(&self) -> Result<Follow, TerraformError> {
        Ok(Follow {
            file: Capture::open(&self.stdout, false)?,
            pending: Vec::new(),
        })
    }

    /// The last [`STDERR_CAP`] bytes of stderr.
    fn stderr_tail(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.stderr) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let cap = STDERR_CAP as u64;
        if len > cap {
            let _ = f.seek(SeekFrom::Start(len - cap));
        }
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn create_private(path: &Path) -> Result<(), TerraformError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| TerraformError::Io {
            action: "create terraform's output file",
            path: path.to_path_buf(),
            source,
        })
}

/// Reads the lines terraform has written so far.
struct Follow {
    file: std::fs::File,
    pending: Vec<u8>,
}

impl Follow {
    /// The complete lines written since the last call; with `at_end`
    /// (terraform has exited) an unterminated last line too.
    fn lines(&mut self, at_end: bool) -> Vec<String> {
        use std::io::Read;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
        let mut out = Vec::new();
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        if at_end && !self.pending.is_empty() {
            out.push(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned());
        }
        out
    }
}

fn lock_timeout_arg(t: Option<Duration>) -> OsString {
    format!("-lock-timeout={}s", t.map(|d| d.as_secs()).unwrap_or(0)).into()
}

const BACKEND_SUMMARIES: &[&str] = &[
    "Failed to get existing workspaces",
    "Error configuring the backend",
    "Error loading state",
    "Failed to load state",
    "Error refreshing state",
    "Failed to save state",
    "Failed to persist state",
    "Error saving state",
    "Error inspecting states",
    "Failed to read state",
    "Failed to write state",
    "Error releasing the state lock",
    "Failed to decode current backend config",
    "Error acquiring the state lock",
];

const AUTH_MARKERS: &[&str] = &[
    "StatusCode: 401",
    "StatusCode: 403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "No valid credential sources",
    "no valid credential sources",
];

const UNREACHABLE_MARKERS: &[&str] = &[
    "connection refused",
    "no such host",
    "i/o timeout",
    "request send failed",
    "dial tcp",
    "exceeded maximum number of attempts",
    "NoSuchBucket",
    "does not exist",
    "context deadline exceeded",
    "TLS handshake",
    "StatusCode: 0",
];

fn classify(command: &'static str, done: Finished, planfile: Option<&Path>) -> TerraformError {
    let errors: Vec<Diagnostic> = done
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    let stderr = done.stderr;
    for d in &errors {
        if d.summary.trim() == "Saved plan is stale" {
            return TerraformError::StalePlan {
                planfile: planfile.map(Path::to_path_buf).unwrap_or_default(),
                stderr,
            };
        }
    }
    for d in &errors {
        if d.summary.starts_with("Error acquiring the state lock") {
            let text = format!("{}\n{}", d.summary, d.detail);
            if !AUTH_MARKERS.iter().any(|m| text.contains(m))
                && !UNREACHABLE_MARKERS.iter().any(|m| text.contains(m))
            {
                return TerraformError::StateLocked {
                    command,
                    lock_id: lock_id(&d.detail),
                    detail: first_line(&d.detail),
                    stderr,
                };
            }
        }
    }
    for d in &errors {
        let text = format!("{}\n{}", d.summary, d.detail);
        let backend = BACKEND_SUMMARIES.iter().any(|s| d.summary.starts_with(s))
            || (command == "init" && d.address.is_none());
        if !backend {
            continue;
        }
        let summary = one_line(&text);
        if AUTH_MARKERS.iter().any(|m| text.contains(m)) {
            return TerraformError::BackendUnauthorised {
                command,
                summary,
                stderr,
            };
        }
        if UNREACHABLE_MARKERS.iter().any(|m| text.contains(m)) {
            return TerraformError::BackendUnreachable {
                command,
                summary,
                stderr,
            };
        }
    }
    if let Some(d) = errors.iter().find(|d| d.address.is_some()) {
        return TerraformError::ResourceFailed {
            command,
            address: d.address.clone().unwrap_or_default(),
            summary: d.summary.clone(),
            detail: one_line(&d.detail),
            stderr,
        };
    }
    let message = errors
        .first()
        .map(|d| {
            if d.detail.is_empty() {
                d.summary.clone()
            } else {
                format!("{}: {}", d.summary, one_line(&d.detail))
            }
        })
        .or_else(|| {
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "no diagnostic was printed".to_string());
    TerraformError::Failed {
        command,
        status: done.status.to_string(),
        message,
        diagnostics: errors,
        stderr,
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.chars().count() > 600 {
        let cut: String = joined.chars().take(600).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

fn lock_id(detail: &str) -> Option<String> {
    detail.lines().find_map(|l| {
        l.trim()
            .strip_prefix("ID:")
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
    })
}

/// Copies a terraform configuration into `dest` (created if needed), leaving
/// out what belongs to a previous run: `.terraform/`, `.git/`, state files
/// (`*.tfstate`, `*.tfstate.backup`) and saved plans (`*.tfplan`).
///
/// Modules referenced outside the directory (`source = "../x"`) are not
/// copied; keep such modules inside the configuration directory.
pub fn copy_configuration(src: &Path, dest: &Path) -> Result<(), TerraformError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TerraformError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dest).map_err(io("create directory", dest))?;
    let entries = std::fs::read_dir(src).map_err(io("read configuration directory", src))?;
    for entry in entries {
        let entry = entry.map_err(io("read configuration directory", src))?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        let from = entry.path();
        let to = dest.join(&name);
        let meta = std::fs::metadata(&from).map_err(io("read", &from))?;
        if meta.is_dir() {
            if name_s == ".terraform" || name_s == ".git" {
                continue;
            }
            copy_configuration(&from, &to)?;
        } else {
            if name_s.ends_with(".tfstate")
                || name_s.ends_with(".tfstate.backup")
                || name_s.ends_with(".tfplan")
            {
                continue;
            }
            std::fs::copy(&from, &to).map_err(io("copy configuration file", &from))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(
            Version::parse("1.11.4"),
            Some(Version {
                major: 1,
                minor: 11,
                patch: 4
            })
        );
        assert!(Version::parse("1.4.7").unwrap() < MINIMUM_VERSION);
        assert!(Version::parse("v1.6.0-beta1").unwrap() >= MINIMUM_VERSION);
        assert!(Version::parse("garbage").is_none());
    }

    fn finished(diags: Vec<Diagnostic>, stderr: &str) -> Finished {
        use std::os::unix::process::ExitStatusExt;
        Finished {
            status: ExitStatus::from_raw(256),
            stdout: String::new(),
            diagnostics: diags,
            changes: None,
            stderr: stderr.to_string(),
            interrupted: false,
            killed: false,
        }
    }

    fn diag(summary: &str, detail: &str, address: Option<&str>) -> Diagnostic {
        Diagnostic {
            severity: "error".into(),
            summary: summary.into(),
            detail: detail.into(),
            address: address.map(str::to_string),
        }
    }

    #[test]
    fn errors_are_classified_from_diagnostics() {
        let c = |d: Diagnostic| classify("plan", finished(vec![d], "stderr text"), None);
        let e = c(diag(
            "Failed to get existing workspaces: Unable to list objects in S3 bucket \"b\"",
            "operation error S3: ListObjectsV2, https response error StatusCode: 403, api error AccessDenied",
            None,
        ));
        assert!(
            matches!(e, TerraformError::BackendUnauthorised { .. }),
            "{e:?}"
        );
        assert_eq!(e.stderr(), Some("stderr text"));
        let e = c(diag(
            "Error refreshing state: dial tcp 127.0.0.1:1: connect: connection refused",
            "",
            None,
        ));
        assert!(
            matches!(e, TerraformError::BackendUnreachable { .. }),
            "{e:?}"
        );
        let e = c(diag(
            "Error acquiring the state lock",
            "Error message: ConditionalCheckFailed\nLock Info:\n  ID: abc-123\n",
            None,
        ));
        assert!(
            matches!(&e, TerraformError::StateLocked { lock_id: Some(id), .. } if id == "abc-123"),
            "{e:?}"
        );
        let e = c(diag("Saved plan is stale", "", None));
        assert!(matches!(e, TerraformError::StalePlan { .. }), "{e:?}");
        let e = c(diag("creating thing", "boom", Some("aws_x.y")));
        assert!(
            matches!(&e, TerraformError::ResourceFailed { address, .. } if address == "aws_x.y"),
            "{e:?}"
        );
        let e = c(diag(
            "Unsupported argument",
            "An argument named \"x\" is not expected here.",
            None,
        ));
        assert!(matches!(e, TerraformError::Failed { .. }), "{e:?}");
        assert!(e.to_string().contains("Unsupported argument"), "{e}");
        let e = classify(
            "show",
            finished(vec![], "Error: no plan\nlast line here\n"),
            None,
        );
        assert!(e.to_string().contains("last line here"), "{e}");
    }

    #[test]
    fn lock_id_is_read_from_the_lock_info() {
        let detail = "Error message: lock held\nLock Info:\n  ID:        5e1c\n  Path:      b/k\n";
        assert_eq!(lock_id(detail).as_deref(), Some("5e1c"));
    }
}
