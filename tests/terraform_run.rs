//! The terraform module against the real terraform binary, with the S3
//! backend on moto's server (or a local state file).
//!
//! Every test needs `terraform` on PATH; without it each test prints a loud
//! SKIPPED line (CI's `.ci/run` fails earlier when terraform is missing).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tendril::Secret;
use tendril::artifact::{ArtifactError, S3Credentials, S3Store};
use tendril::terraform::{
    ApplyOptions, Backend, Event, InitOptions, OutputType, PlanOptions, S3Settings, Terraform,
    TerraformError, copy_configuration,
};
use tendril_testkit::moto::Moto;
use tokio_util::sync::CancellationToken;

const REGION: &str = "eu-west-1";

fn terraform_available() -> bool {
    let ok = std::process::Command::new("terraform")
        .arg("version")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `terraform` is not on PATH; this terraform test did not run !!!!!!!!\n"
        );
    }
    ok
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/terraform")
        .join(name)
}

fn env_of(pairs: Vec<(String, String)>) -> Vec<(String, Secret<String>)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect()
}

async fn create_bucket(moto: &Moto, bucket: &str) {
    let resp = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "create bucket: {}",
        resp.status()
    );
}

async fn get_object(moto: &Moto, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let creds = S3Credentials {
        access_key_id: tendril_testkit::moto::ACCESS_KEY_ID.into(),
        secret_access_key: Secret::new(tendril_testkit::moto::SECRET_ACCESS_KEY.into()),
        session_token: None,
    };
    let store = S3Store::new(bucket, REGION, Some(&moto.endpoint()), "", creds).unwrap();
    match store.get_object(key, 64 << 20).await {
        Ok(bytes) => Some(bytes),
        Err(ArtifactError::NotFound { .. }) => None,
        Err(e) => panic!("get {key}: {e}"),
    }
}

fn s3_backend(moto: &Moto, bucket: &str, key: &str) -> Backend {
    Backend::S3(S3Settings {
        bucket: bucket.into(),
        key: key.into(),
        region: REGION.into(),
        endpoint: Some(moto.endpoint()),
        use_path_style: true,
        use_lockfile: true,
        profile: None,
    })
}

/// A copy of `fixture` in `dir/name`, bound to terraform with moto's credentials.
async fn terraform_for(
    fixture_name: &str,
    dir: &Path,
    name: &str,
    moto: Option<&Moto>,
) -> Terraform {
    let work = dir.join(name);
    copy_configuration(&fixture(fixture_name), &work).unwrap();
    let env = moto
        .map(|m| env_of(m.client_env(REGION)))
        .unwrap_or_default();
    Terraform::new("terraform", &work, env).await.unwrap()
}

fn collecting_sink() -> (Arc<Mutex<Vec<Event>>>, impl Fn(Event) + Send + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    (events, move |e: Event| sink_events.lock().unwrap().push(e))
}

fn ignore(_: Event) {}

fn write_vars(dir: &Path, vars: serde_json::Value) -> PathBuf {
    let path = dir.join("vars.tfvars.json");
    std::fs::write(&path, serde_json::to_vec(&vars).unwrap()).unwrap();
    path
}

fn state_resources(state: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(state).expect("state is JSON");
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}.{}",
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_show_apply_output_with_state_in_the_bucket() {
    if !terraform_available() {
        return;
    }
    let moto = Moto::start();
    create_bucket(&moto, "state").await;
    let dir = tempfile::tempdir().unwrap();
    let tf = terraform_for("basic", dir.path(), "w", Some(&moto)).await;
    let never = CancellationToken::new();
    let backend = s3_backend(&moto, "state", "vy/shop/prod/eu-west-1/terraform.tfstate");
    tf.init(
        &InitOptions {
            backend,
            reconfigure: false,
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();

    let vars = write_vars(
        tf.workdir(),
        serde_json::json!({"project_name": "shop", "environment": "prod", "region": REGION}),
    );
    let plan_file = tf.workdir().join("plan.tfplan");
    let (plan_events, plan_sink) = collecting_sink();
    let planned = tf
        .plan(
            &PlanOptions {
                out: plan_file.clone(),
                var_files: vec![vars],
                ..Default::default()
            },
            &plan_sink,
            &never,
        )
        .await
        .unwrap();
    assert_eq!(planned.changes.add, 2);
    assert!(plan_events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::PlannedChange { address, action } if address == "terraform_data.network" && action == "create")));

    let summary = tf.show_plan(&plan_file, &never).await.unwrap();
    assert_eq!((summary.add, summary.change, summary.remove), (2, 0, 0));
    assert_eq!(
        summary.create_addresses,
        vec!["terraform_data.network", "terraform_data.revision"]
    );

    let (events, sink) = collecting_sink();
    let applied = tf
        .apply(&plan_file, &ApplyOptions::default(), &sink, &never)
        .await
        .unwrap();
    assert_eq!(applied.changes.add, 2);
    let events = events.lock().unwrap().clone();
    let started = events
        .iter()
        .position(|e| matches!(e, Event::ApplyStart { address, .. } if address == "terraform_data.network"))
        .expect("apply_start event for terraform_data.network");
    let completed = events
        .iter()
        .position(|e| matches!(e, Event::ApplyComplete { address, id: Some(_), .. } if address == "terraform_data.network"))
        .expect("apply_complete event for terraform_data.network");
    assert!(started < completed);
    assert!(events.iter().any(
        |e| matches!(e, Event::ChangeSummary { operation, changes } if operation == "apply" && changes.add == 2)
    ));
    assert!(events.iter().any(|e| matches!(e, Event::Outputs { outputs } if outputs.contains(&("db_password".to_string(), true)))));

    // The state lives in the bucket, and the lock object is gone.
    let state = get_object(&moto, "state", "vy/shop/prod/eu-west-1/terraform.tfstate")
        .await
        .expect("state object in the bucket");
    let mut resources = state_resources(&state);
    resources.sort();
    assert_eq!(
        resources,
        vec!["terraform_data.network", "terraform_data.revision"]
    );
    assert!(
        get_object(
            &moto,
            "state",
            "vy/shop/prod/eu-west-1/terraform.tfstate.tflock"
        )
        .await
        .is_none()
    );

    // Outputs keep their types; sensitive ones are secrets.
    let outputs = tf.output(&never).await.unwrap();
    assert_eq!(outputs.string("name"), Some("shop-prod-eu-west-1"));
    assert_eq!(outputs.get("revision").unwrap().ty, OutputType::Number);
    assert_eq!(outputs.get("enabled").unwrap().ty, OutputType::Bool);
    assert!(matches!(
        outputs.get("zones").unwrap().ty,
        OutputType::Tuple(_) | OutputType::List(_)
    ));
    assert_eq!(
        outputs.get("unique_zones").unwrap().ty,
        OutputType::Set(Box::new(OutputType::String))
    );
    assert_eq!(
        outputs.get("tags").unwrap().ty,
        OutputType::Map(Box::new(OutputType::String))
    );
    assert!(matches!(
        outputs.get("cluster").unwrap().ty,
        OutputType::Object(_)
    ));
    assert!(matches!(outputs.get("pair").unwrap().ty, OutputType::Tuple(ref t) if t.len() == 3));
    let creds = outputs.get("db_credentials").unwrap();
    assert!(creds.is_sensitive());
    assert_eq!(creds.expose()["password"], "s3cret-shop");
    assert!(outputs.get("db_password").unwrap().is_sensitive());
    let debug = format!("{outputs:?}");
    assert!(
        !debug.contains("s3cret-shop") && !debug.contains("pw-"),
        "{debug}"
    );
    let report = outputs.to_report_json().to_string();
    assert!(!report.contains("s3cret-shop"), "{report}");
    assert!(report.contains("[redacted]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_made_before_the_state_changed_is_stale() {
    if !terraform_available() {
        return;
    }
    let moto = Moto::start();
    create_bucket(&moto, "state").await;
    let dir = tempfile::tempdir().unwrap();
    let tf = terraform_for("basic", dir.path(), "w", Some(&moto)).await;
    let never = CancellationToken::new();
    let backend = s3_backend(&moto, "state", "stale/terraform.tfstate");
    tf.init(
        &InitOptions {
            backend,
            reconfigure: false,
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let plan = |out: &str| PlanOptions {
        out: tf.workdir().join(out),
        ..Default::default()
    };
    tf.plan(&plan("old.tfplan"), &ignore, &never).await.unwrap();
    tf.plan(&plan("new.tfplan"), &ignore, &never).await.unwrap();
    tf.apply(
        &tf.workdir().join("new.tfplan"),
        &ApplyOptions::default(),
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let err = tf
        .apply(
            &tf.workdir().join("old.tfplan"),
            &ApplyOptions::default(),
            &ignore,
            &never,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TerraformError::StalePlan { .. }), "{err:?}");
    assert!(err.to_string().contains("stale"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_resource_is_named_with_its_diagnostic() {
    if !terraform_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tf = terraform_for("failing", dir.path(), "w", None).await;
    let never = CancellationToken::new();
    let state = dir.path().join("state/terraform.tfstate");
    tf.init(
        &InitOptions {
            backend: Backend::Local {
                path: state.clone(),
            },
            reconfigure: false,
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let out = tf.workdir().join("p.tfplan");
    tf.plan(
        &PlanOptions {
            out: out.clone(),
            ..Default::default()
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let (events, sink) = collecting_sink();
    let err = tf
        .apply(&out, &ApplyOptions::default(), &sink, &never)
        .await
        .unwrap_err();
    let TerraformError::ResourceFailed {
        address,
        summary,
        detail,
        stderr: _,
        ..
    } = &err
    else {
        panic!("expected ResourceFailed, got {err:?}");
    };
    assert_eq!(address, "terraform_data.broken");
    assert!(summary.contains("local-exec"), "{summary}");
    assert!(detail.contains("exit status 3"), "{detail}");
    assert!(events.lock().unwrap().iter().any(
        |e| matches!(e, Event::ApplyErrored { address, .. } if address == "terraform_data.broken")
    ));
    // The resource that succeeded is in the state.
    let resources = state_resources(&std::fs::read(&state).unwrap());
    assert!(
        resources.contains(&"terraform_data.ok".to_string()),
        "{resources:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_apply_interrupts_terraform_and_keeps_the_state_consistent() {
    if !terraform_available() {
        return;
    }
    let moto = Moto::start();
    create_bucket(&moto, "state").await;
    let dir = tempfile::tempdir().unwrap();
    let tf = terraform_for("slow", dir.path(), "w", Some(&moto))
        .await
        .with_interrupt_grace(Duration::from_secs(120));
    let never = CancellationToken::new();
    let key = "cancel/terraform.tfstate";
    tf.init(
        &InitOptions {
            backend: s3_backend(&moto, "state", key),
            reconfigure: false,
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let pid_file = dir.path().join("local-exec.pid");
    let vars = write_vars(
        tf.workdir(),
        serde_json::json!({"sleep_seconds": 600, "pid_file": pid_file}),
    );
    let out = tf.workdir().join("p.tfplan");
    tf.plan(
        &PlanOptions {
            out: out.clone(),
            var_files: vec![vars.clone()],
            ..Default::default()
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();

    // Cancel as soon as the local-exec command is running.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let sink = move |e: Event| {
        if let Event::Provisioner {
            output: Some(line), ..
        } = &e
            && line.trim() == "started-sleeping"
        {
            trigger.cancel();
        }
    };
    let err = tokio::time::timeout(
        Duration::from_secs(300),
        tf.apply(&out, &ApplyOptions::default(), &sink, &cancel),
    )
    .await
    .expect("apply stopped after the interrupt")
    .unwrap_err();
    assert!(
        matches!(err, TerraformError::Cancelled { killed: false, .. }),
        "terraform should stop on SIGINT within the grace period: {err:?}"
    );

    // The local-exec command did not survive terraform as an orphan.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "local-exec process {pid} is still running after terraform stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The state in the bucket is whole: `first` was recorded, the lock released.
    let state = get_object(&moto, "state", key)
        .await
        .expect("state written");
    let resources = state_resources(&state);
    assert!(
        resources.contains(&"terraform_data.first".to_string()),
        "{resources:?}"
    );
    assert!(
        get_object(&moto, "state", &format!("{key}.tflock"))
            .await
            .is_none()
    );

    // And the next run can plan against it (no lock held, state readable).
    let again = tf
        .plan(
            &PlanOptions {
                out: tf.workdir().join("again.tfplan"),
                var_files: vec![vars],
                ..Default::default()
            },
            &ignore,
            &never,
        )
        .await
        .unwrap();
    assert_eq!(again.changes.add, 1, "only `slow` is left to create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_state_lock_and_a_missing_bucket_are_classified() {
    if !terraform_available() {
        return;
    }
    let moto = Moto::start();
    create_bucket(&moto, "state").await;
    let dir = tempfile::tempdir().unwrap();
    let never = CancellationToken::new();

    // Someone else holds the lock.
    let tf = terraform_for("basic", dir.path(), "locked", Some(&moto)).await;
    tf.init(
        &InitOptions {
            backend: s3_backend(&moto, "state", "locked/terraform.tfstate"),
            reconfigure: false,
        },
        &ignore,
        &never,
    )
    .await
    .unwrap();
    let lock = serde_json::json!({"ID": "4f1c0a7e-0000-4000-8000-000000000001", "Operation": "OperationTypeApply",
        "Who": "someone@elsewhere", "Version": "1.11.4", "Created": "2026-01-01T00:00:00Z", "Path": "state/locked/terraform.tfstate"});
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/state/locked/terraform.tfstate.tflock",
            moto.endpoint()
        ))
        .body(lock.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let err = tf
        .plan(
            &PlanOptions {
                out: tf.workdir().join("p.tfplan"),
                ..Default::default()
            },
            &ignore,
            &never,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TerraformError::StateLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("force-unlock"), "{err}");

    // The bucket does not exist.
    let tf = terraform_for("basic", dir.path(), "nobucket", Some(&moto)).await;
    let err = tf
        .init(
            &InitOptions {
                backend: s3_backend(&moto, "no-such-bucket", "x/terraform.tfstate"),
                reconfigure: false,
            },
            &ignore,
            &never,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TerraformError::BackendUnreachable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_child_environment_is_an_allow_list_plus_what_is_passed() {
    use std::os::unix::fs::PermissionsExt;
    // A stand-in binary that answers `version -json` and records its environment.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-terraform");
    let env_dump = dir.path().join("env.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > '{}'\necho '{{\"terraform_version\":\"1.9.3\"}}'\n",
            env_dump.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tf = Terraform::new(
        &script,
        dir.path(),
        vec![(
            "AWS_ACCESS_KEY_ID".into(),
            Secret::new("AKIDEXAMPLE".into()),
        )],
    )
    .await
    .unwrap();
    assert_eq!(tf.version().to_string(), "1.9.3");
    assert!(!format!("{tf:?}").contains("AKIDEXAMPLE"));
    let env = std::fs::read_to_string(&env_dump).unwrap();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(env.contains("AWS_ACCESS_KEY_ID=AKIDEXAMPLE"));
    assert!(env.contains("TF_IN_AUTOMATION=1"));
    for name in &names {
        assert!(
            tendril::terraform::INHERITED_ENV.contains(name)
                || [
                    "AWS_ACCESS_KEY_ID",
                    "TF_IN_AUTOMATION",
                    "TF_INPUT",
                    "CHECKPOINT_DISABLE",
                    "PWD",
                    "SHLVL",
                    "_"
                ]
                .contains(name),
            "unexpected variable {name} reached terraform"
        );
    }

    // A terraform older than 1.5 is refused.
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"terraform_version\":\"1.4.6\"}'\n",
    )
    .unwrap();
    let err = Terraform::new(&script, dir.path(), vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TerraformError::TooOld { .. }), "{err:?}");
    assert!(err.to_string().contains("1.5"), "{err}");

    // A missing binary says how to fix it.
    let err = Terraform::new(dir.path().join("nope"), dir.path(), vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TerraformError::NotFound { .. }), "{err:?}");
}
