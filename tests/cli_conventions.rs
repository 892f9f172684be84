//! The command line follows kubectl's and helm's conventions: `-o, --output`
//! is always a format (`text|json|yaml`), files are `--output-file` /
//! `--output-dir`, the kubeconfig is `--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`, durations are Go-style; plus `version`, `completion` and
//! `man`. Everything here runs the real binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs tendril with `env` set, `KUBECONFIG` removed unless given, and HOME
/// pointing at `home`.
fn tendril_in(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tendril"));
    cmd.args(args)
        .current_dir(home)
        .env_remove("KUBECONFIG")
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn tendril(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    tendril_in(dir.path(), args, &[])
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_json_names_the_version_commit_and_target() {
    let doc: Value = serde_json::from_str(&stdout(&tendril(&["version", "-o", "json"]))).unwrap();
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let commit = doc["git_commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || commit.len() >= 40 && commit[..40].chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    let target = doc["target"].as_str().unwrap();
    assert!(target.contains(std::env::consts::ARCH), "{target}");
    assert!(target.contains(std::env::consts::OS), "{target}");

    let yaml: Value =
        serde_saphyr::from_str(&stdout(&tendril(&["version", "-o", "yaml"]))).unwrap();
    assert_eq!(yaml, doc);
    let text = stdout(&tendril(&["version"]));
    assert!(
        text.starts_with(&format!("tendril {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains(commit) && text.contains(target), "{text}");
    assert_eq!(stdout(&tendril(&["--version"])), text);
}

#[test]
fn completions_for_bash_zsh_and_fish_complete_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F _tendril"),
        ("zsh", "#compdef tendril"),
        ("fish", "complete -c tendril"),
    ] {
        let script = stdout(&tendril(&["completion", shell]));
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        for sub in ["deploy", "plan", "render", "apply", "version", "completion"] {
            assert!(script.contains(sub), "{shell}: `{sub}` is not completed");
        }
        assert!(script.contains("kubeconfig") && script.contains("output-file"));
    }
    let out = tendril(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));
}

#[test]
fn the_man_page_documents_every_command() {
    let page = stdout(&tendril(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH tendril 1"),
        "{page}"
    );
    assert!(page.contains(".TH tendril 1"));
    for sub in ["deploy", "render", "version"] {
        assert!(page.contains(sub), "{sub} missing from tendril.1");
    }
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    stdout(&tendril(&["man", "--out-dir", pages.to_str().unwrap()]));
    for file in [
        "tendril.1",
        "tendril-deploy.1",
        "tendril-render.1",
        "tendril-chart-package.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(".TH"), "{file}");
    }
    let deploy = std::fs::read_to_string(pages.join("tendril-deploy.1")).unwrap();
    assert!(deploy.contains("kubeconfig"), "{deploy}");
}

/// `-o` in a command's help, when it has one: its possible values.
fn output_values(help: &str) -> Option<String> {
    let at = help.find("-o, --output")?;
    let rest = &help[at..];
    let end = rest.find("\n  -").unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[test]
fn dash_o_is_a_format_on_every_command() {
    let with_o: &[&[&str]] = &[
        &["version"],
        &["plan"],
        &["deploy"],
        &["apply"],
        &["render"],
        &["chart", "package"],
    ];
    let without_o: &[&[&str]] = &[
        &["kubeconfig"],
        &["token", "eks"],
        &["token", "gke"],
        &["token", "aks"],
        &["worker"],
        &["finalize"],
        &["completion"],
        &["man"],
    ];
    for cmd in with_o {
        let mut args = cmd.to_vec();
        args.push("-h");
        let help = stdout(&tendril(&args));
        let values = output_values(&help).unwrap_or_else(|| panic!("{cmd:?} has no -o:\n{help}"));
        let formats = if cmd[0] == "render" {
            "[possible values: text, json, yaml]"
        } else {
            "[default: text] [possible values: text, json, yaml]"
        };
        assert!(values.contains(formats), "{cmd:?}: {values}");
    }
    for cmd in without_o {
        let mut args = cmd.to_vec();
        args.push("-h");
        let help = stdout(&tendril(&args));
        assert!(
            output_values(&help).is_none(),
            "{cmd:?} has a -o that is no format:\n{help}"
        );
    }
}

#[test]
fn render_dash_o_json_prints_json_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = tendril_in(
        dir.path(),
        &["render", "-o", "json", "--redis-password", "p"],
        &[],
    );
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|o| o["metadata"]["name"] == "argocd-server")
    );
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "render wrote {files:?}");

    // --output-dir: one file per template, as helm template --output-dir
    let out = tendril_in(
        dir.path(),
        &[
            "render",
            "--output-dir",
            "manifests",
            "--redis-password",
            "p",
        ],
        &[],
    );
    stdout(&out);
    let server =
        std::fs::read_to_string(dir.path().join("manifests/argo-cd/templates/server.yaml"))
            .or_else(|_| {
                // the template file name is the chart's; find the one holding argocd-server
                walk(&dir.path().join("manifests"))
                    .into_iter()
                    .map(std::fs::read_to_string)
                    .find(|t| {
                        t.as_ref()
                            .is_ok_and(|t| t.contains("name: argocd-server\n"))
                    })
                    .unwrap_or_else(|| Err(std::io::Error::other("no file holds argocd-server")))
            })
            .unwrap();
    assert!(server.starts_with("---\n# Source: templates/"), "{server}");
    assert!(dir.path().join("manifests/argo-cd/crds").is_dir());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn durations_are_go_style() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let m = manifest.to_str().unwrap();
    let k = missing.to_str().unwrap();
    // accepted: the command gets as far as the kubeconfig
    let out = tendril(&["apply", "-f", m, "--kubeconfig", k, "--timeout", "1h30m"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-kubeconfig"),
        "{}",
        stderr(&out)
    );
    // refused while parsing, naming the value
    let out = tendril(&["apply", "-f", m, "--kubeconfig", k, "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`soon` is not a duration like 10m, 90s or 1h30m"));
}

#[test]
fn apply_takes_the_kubeconfig_from_the_flag_then_kubeconfig_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let env_file = dir.path().join("from-env.yaml");
    let flag_file = dir.path().join("from-flag.yaml");
    let env = env_file.to_str().unwrap();

    let out = tendril_in(dir.path(), &["apply", "-f", m], &[]);
    let home_config = dir.path().join(".kube/config");
    assert!(
        stderr(&out).contains(home_config.to_str().unwrap()),
        "{}",
        stderr(&out)
    );

    let out = tendril_in(dir.path(), &["apply", "-f", m], &[("KUBECONFIG", env)]);
    assert!(stderr(&out).contains("from-env.yaml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("$KUBECONFIG"), "{}", stderr(&out));

    let out = tendril_in(
        dir.path(),
        &[
            "apply",
            "-f",
            m,
            "--kubeconfig",
            flag_file.to_str().unwrap(),
        ],
        &[("KUBECONFIG", env)],
    );
    assert!(stderr(&out).contains("from-flag.yaml"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("from-env.yaml"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn kubeconfig_writes_into_kubeconfig_else_home() {
    let facts = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/outputs/aws.json");
    let facts = facts.to_str().unwrap();
    let context = "arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod";

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("first");
    let env = format!(
        "{}:{}",
        target.display(),
        dir.path().join("second").display()
    );
    let out = tendril_in(
        dir.path(),
        &["kubeconfig", "--facts", facts],
        &[("KUBECONFIG", &env)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&target).unwrap().contains(context));
    assert!(!dir.path().join("second").exists());
    assert!(!dir.path().join(".kube").exists());

    let out = tendril_in(dir.path(), &["kubeconfig", "--facts", facts], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let home = std::fs::read_to_string(dir.path().join(".kube/config")).unwrap();
    assert!(home.contains(context));
}

#[test]
fn the_binary_never_reads_the_test_kubeconfig_variable() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_tendril")).unwrap();
    let needle = b"TENDRIL_E2E_KUBECONFIG";
    assert!(
        !binary.windows(needle.len()).any(|w| w == needle),
        "the shipped binary names TENDRIL_E2E_KUBECONFIG"
    );
}

fn terraform_available() -> bool {
    let ok = Command::new("terraform")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; the deploy kubeconfig test did not run !!!!!!!!\n"
        );
    }
    ok
}

#[test]
fn deploy_of_a_job_without_a_cluster_reads_kubeconfig() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshot = serde_json::json!({"project_name": "shop", "environment": "prod",
        "region": "eu-west-1", "provider": "aws"});
    let tendril_part = serde_json::json!({
        "terraform": {"workdir": Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/terraform/eks"),
                      "backend": {"local": {"path": "state/terraform.tfstate"}}},
        "artifacts": {"store": "local", "dir": "artifacts"},
    });
    let plan_id = "0b7e4c1a-5d2f-4e3a-9c1b-7f6e5d4c3b2a";
    let job = |id: &str, kind: &str| {
        let mut job = serde_json::json!({"id": id, "job_type": kind, "vine_id": "v",
            "vineyard_id": "vy", "config_snapshot": snapshot});
        if kind == "DEPLOY" {
            job["plan_job_id"] = serde_json::json!(plan_id);
        }
        serde_json::json!({"job": job, "cloud_identity": {"provider": "local"}, "tendril": tendril_part})
            .to_string()
    };
    let plan = dir.path().join("plan.json");
    let deploy = dir.path().join("deploy.json");
    std::fs::write(&plan, job(plan_id, "PLAN")).unwrap();
    std::fs::write(
        &deploy,
        job("3f0c9a52-5a1e-4f0e-9b0e-2a7d2c1e9d10", "DEPLOY"),
    )
    .unwrap();
    let env_file = dir.path().join("env-kubeconfig");
    let flag_file = dir.path().join("flag-kubeconfig");
    for f in [&env_file, &flag_file] {
        std::fs::write(f, "this: [is not a kubeconfig\n").unwrap();
    }
    let deploy_with = |extra: &[&str]| {
        stdout(&tendril_in(
            dir.path(),
            &["plan", "--job", plan.to_str().unwrap()],
            &[],
        ));
        let mut args = vec!["deploy", "--job", deploy.to_str().unwrap(), "-o", "json"];
        args.extend(extra);
        let out = tendril_in(
            dir.path(),
            &args,
            &[("KUBECONFIG", env_file.to_str().unwrap())],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        tendril_testkit::report_schema::assert_valid_report(&report);
        // the kubeconfig is checked before terraform runs
        assert_eq!(report["failed_phase"], "preflight", "{report:#}");
        report["error"].as_str().unwrap().to_string()
    };
    let error = deploy_with(&[]);
    assert!(error.contains("env-kubeconfig"), "{error}");
    let error = deploy_with(&["--kubeconfig", flag_file.to_str().unwrap()]);
    assert!(
        error.contains("flag-kubeconfig") && !error.contains("env-kubeconfig"),
        "{error}"
    );
}
