//! `tendril apply` as a user runs it: the built binary, a kubeconfig file.

mod apply_common;

use apply_common::*;
use serde_json::{Value, json};
use std::process::Stdio;
use tendril_testkit::e2e;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn tendril(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tendril"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run tendril");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn applies_a_directory_and_reports_a_summary_and_json() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("cli-dir").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\ndata: {k: v}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: two}\nstringData: {password: hunter2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: three}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let args = [
        "apply",
        "-f",
        &dir_s,
        "--kubeconfig",
        &kc,
        "-n",
        ns.name(),
        "--output",
        "json",
        "--applyset",
        "cli-dir",
        "--prune",
    ];
    let run = tendril(&args, None, &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("OBJECT") && run.stderr.contains("ACTION"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("ConfigMap/{}/one", ns.name())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("3 objects: 3 created"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
        "secret data never printed"
    );
    let report: Value = serde_json::from_str(&run.stdout).expect("json report on stdout");
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    assert!(objects.iter().all(|o| o["action"] == "created"), "{report}");

    let again = tendril(&args, None, &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("3 unchanged"), "{}", again.stderr);
    // First: discovery, the parent read, its namespace, 3 applies, the parent
    // write. Again: discovery, the parent read, one metadata list per kind;
    // nothing is sent.
    assert!(run.stderr.contains("; 7 API requests"), "{}", run.stderr);
    assert!(
        again.stderr.contains("; 5 API requests"),
        "{}",
        again.stderr
    );
    ns.delete().await;
}

#[tokio::test]
async fn reads_stdin_and_kubeconfig_from_the_environment() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("cli-stdin").await;
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: piped, namespace: {}}}\ndata: {{k: v}}\n",
        ns.name()
    );
    let run = tendril(&["apply", "-f", "-"], Some(&yaml), &[("KUBECONFIG", &kc)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        get(
            &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
            "piped"
        )
        .await
        .is_some()
    );
    ns.delete().await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("cli-dry").await;
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: maybe}\n";
    let run = tendril(
        &[
            "apply",
            "-f",
            "-",
            "--dry-run",
            "--kubeconfig",
            &kc,
            "-n",
            ns.name(),
        ],
        Some(yaml),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("created (dry run)"), "{}", run.stderr);
    assert!(
        get(
            &api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name())),
            "maybe"
        )
        .await
        .is_none()
    );
    ns.delete().await;
}

#[tokio::test]
async fn failures_exit_non_zero_and_say_why() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("cli-fail").await;
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let cms = api(&cluster, "v1", "ConfigMap", "configmaps", Some(ns.name()));
    apply_as(&cms, "legacy-tool", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": ns.name()}, "data": {"k": "old"}})).await;

    // Conflict.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: new}\n";
    let run = tendril(
        &["apply", "-f", "-", "--kubeconfig", &kc, "-n", ns.name()],
        Some(yaml),
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("error:")
            && run.stderr.contains("legacy-tool")
            && run.stderr.contains(".data.k"),
        "{}",
        run.stderr
    );
    let forced = tendril(
        &[
            "apply",
            "-f",
            "-",
            "--force-conflicts",
            "--field-manager",
            "deployer",
            "--kubeconfig",
            &kc,
            "-n",
            ns.name(),
        ],
        Some(yaml),
        &[],
    )
    .await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let live = get(&cms, "shared").await.unwrap();
    assert_eq!(live["data"]["k"], "new");
    assert!(
        live["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "deployer")
    );

    // Unknown kind names the input.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd.yaml");
    std::fs::write(
        &file,
        "apiVersion: nowhere.tendril.test/v1\nkind: Ghost\nmetadata: {name: g}\n",
    )
    .unwrap();
    let run = tendril(
        &["apply", "-f", file.to_str().unwrap(), "--kubeconfig", &kc],
        None,
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("Ghost") && run.stderr.contains("odd.yaml#1"),
        "{}",
        run.stderr
    );

    // Bad YAML and a missing file.
    std::fs::write(&file, "kind: [unclosed\n").unwrap();
    let run = tendril(
        &["apply", "-f", file.to_str().unwrap(), "--kubeconfig", &kc],
        None,
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("odd.yaml") && run.stderr.contains("not valid YAML"),
        "{}",
        run.stderr
    );
    let run = tendril(
        &[
            "apply",
            "-f",
            "/nonexistent/tendril.yaml",
            "--kubeconfig",
            &kc,
        ],
        None,
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("/nonexistent/tendril.yaml"),
        "{}",
        run.stderr
    );

    // A namespace that does not exist.
    let missing = format!("{}-missing", ns.name());
    let run = tendril(
        &["apply", "-f", "-", "--kubeconfig", &kc, "-n", &missing],
        Some(yaml),
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains(&format!("namespace {missing} does not exist")),
        "{}",
        run.stderr
    );

    // A context the kubeconfig does not have.
    let run = tendril(
        &[
            "apply",
            "-f",
            "-",
            "--kubeconfig",
            &kc,
            "--context",
            "no-such-context",
        ],
        Some(yaml),
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("no-such-context"), "{}", run.stderr);

    // A kubeconfig that does not exist.
    let run = tendril(
        &[
            "apply",
            "-f",
            "-",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        Some(yaml),
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("/nonexistent/kubeconfig"),
        "{}",
        run.stderr
    );
    ns.delete().await;
}

#[tokio::test]
async fn wait_timeout_exits_non_zero_with_the_objects_not_ready() {
    let cluster = e2e::cluster().await;
    let ns = cluster.namespace("cli-wait").await;
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: never}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: never}}\n  template:\n    metadata: {labels: {app: never}}\n    spec: {containers: [{name: c, image: 'registry.invalid/tendril/none:1'}]}\n";
    let run = tendril(
        &[
            "apply",
            "-f",
            "-",
            "--wait",
            "--timeout",
            "3s",
            "--kubeconfig",
            &kc,
            "-n",
            ns.name(),
        ],
        Some(yaml),
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("timed out after 3s"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("Deployment/{}/never", ns.name())),
        "{}",
        run.stderr
    );
    ns.delete().await;
}

/// A server that accepts connections and never speaks TLS: the connection
/// (TCP and TLS handshake) is bounded by `--timeout` when it is shorter
/// than the 30 s default, so `apply --timeout 2s` gives up after about 2 s,
/// naming the deadline, instead of hanging for 30 s.
#[tokio::test]
async fn a_server_that_never_speaks_tls_is_given_up_on_at_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("silent.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster: {{server: \"https://127.0.0.1:{port}\"}}\ncontexts:\n- name: s\n  context: {{cluster: s, user: u}}\ncurrent-context: s\nusers:\n- name: u\n  user: {{token: not-sent}}\n"
        ),
    )
    .unwrap();
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let run = tendril(
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--timeout",
            "2s",
        ],
        None,
        &[],
    )
    .await;
    let elapsed = started.elapsed();
    hold.abort();
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("deadline has elapsed"),
        "{}",
        run.stderr
    );
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "held for {elapsed:?}: the 30 s default applied, not --timeout"
    );
}
