//! Plan artifacts in each store: a local directory, Supabase Storage (the
//! testkit's object-API server) and S3 (moto's server). Each round-trips an
//! artifact and refuses a truncated or corrupt plan by its digest.

use tendril::Secret;
use tendril::artifact::{
    ArtifactError, LocalStore, MANIFEST_FILE, PLAN_FILE, PlanManifest, S3Credentials, S3Store,
    Store, SupabaseStore,
};
use tendril::confighash::ConfigHash;
use tendril::job::{ArtifactStoreConfig, SecretValue};
use tendril::terraform::ChangeSummary;
use tendril_testkit::moto::{self, Moto};
use tendril_testkit::storage::SupabaseStorage;

const JOB: &str = "0b7e4c1a-1111-4222-8333-444455556666";

fn sample() -> (Vec<u8>, PlanManifest) {
    let plan: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let hash = ConfigHash::of(&serde_json::json!({"project_name": "shop", "size": 2}));
    let summary = ChangeSummary {
        add: 1,
        create_addresses: vec!["terraform_data.a".into()],
        ..Default::default()
    };
    let manifest = PlanManifest::new(JOB, hash, &plan, "1.11.4", summary);
    (plan, manifest)
}

/// Upload, download, and the manifest and plan come back identical.
async fn round_trip(store: &Store) {
    let (plan, manifest) = sample();
    store.upload(JOB, &plan, &manifest).await.unwrap();
    let got = store.download(JOB, 10 * 1024 * 1024).await.unwrap();
    assert_eq!(got.plan, plan);
    assert_eq!(got.manifest, manifest);
    assert!(got.check_config(&manifest.config_hash).is_ok());
    let other = ConfigHash::of(&serde_json::json!({"project_name": "shop", "size": 3}));
    assert_eq!(
        got.check_config(&other).unwrap_err().to_string(),
        "Configuration has changed since the plan was generated. Please re-plan."
    );
    // A download cap below the plan's size is refused before the plan is fetched.
    let err = store.download(JOB, 1000).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    // Another job's artifact does not exist.
    let err = store.download("no-such-job", 1 << 20).await.unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err:?}");
}

/// Replaces the stored plan with `bytes` (through the store itself) and expects `check`.
async fn tamper(store: &Store, bytes: &[u8]) -> ArtifactError {
    store
        .put(
            &format!("{JOB}/{PLAN_FILE}"),
            bytes,
            "application/octet-stream",
        )
        .await
        .unwrap();
    store.download(JOB, 10 * 1024 * 1024).await.unwrap_err()
}

async fn rejects_truncated_and_corrupt(store: &Store) {
    let (plan, manifest) = sample();
    store.upload(JOB, &plan, &manifest).await.unwrap();
    let err = tamper(store, &plan[..plan.len() / 2]).await;
    assert!(matches!(err, ArtifactError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut flipped = plan.clone();
    flipped[1234] ^= 0x40;
    let err = tamper(store, &flipped).await;
    assert!(
        matches!(err, ArtifactError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("corrupt"), "{err}");
    let mut longer = plan.clone();
    longer.extend_from_slice(b"trailing");
    let err = tamper(store, &longer).await;
    assert!(
        matches!(err, ArtifactError::DigestMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::new(dir.path().join("artifacts")));
    round_trip(&store).await;
    // The layout is {job}/plan.tfplan + {job}/manifest.json, and nothing else.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("artifacts").join(JOB))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![MANIFEST_FILE, PLAN_FILE]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("artifacts").join(JOB).join(MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    assert!(
        manifest["config_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(manifest["plan_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["terraform_version"], "1.11.4");
    assert_eq!(manifest["change_summary"]["add"], 1);
    assert!(manifest["created_at"].as_str().unwrap().ends_with('Z'));
    rejects_truncated_and_corrupt(&store).await;
}

#[tokio::test]
async fn supabase_storage_store() {
    let server = SupabaseStorage::start("service-key-123");
    server.create_bucket("plan-artifacts");
    let cfg = ArtifactStoreConfig::Supabase {
        url: server.url(),
        bucket: "plan-artifacts".into(),
        service_key: Some(SecretValue::Literal(Secret::new("service-key-123".into()))),
    };
    let store = Store::from_config(&cfg, None).unwrap();
    assert!(!format!("{store:?}").contains("service-key-123"));
    round_trip(&store).await;
    assert!(
        server
            .object("plan-artifacts", &format!("{JOB}/{PLAN_FILE}"))
            .is_some()
    );
    assert!(server.requests().contains(&format!(
        "POST /storage/v1/object/plan-artifacts/{JOB}/manifest.json"
    )));
    rejects_truncated_and_corrupt(&store).await;

    // A plan truncated behind tendril's back (e.g. an interrupted upload).
    let (plan, manifest) = sample();
    store.upload(JOB, &plan, &manifest).await.unwrap();
    server.put_object(
        "plan-artifacts",
        &format!("{JOB}/{PLAN_FILE}"),
        plan[..10].to_vec(),
    );
    let err = store.download(JOB, 1 << 24).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::Truncated { actual: 10, .. }),
        "{err:?}"
    );

    // A wrong key is refused and said so.
    let wrong = Store::Supabase(
        SupabaseStore::new(&server.url(), "plan-artifacts", Secret::new("nope".into())).unwrap(),
    );
    let err = wrong.download(JOB, 1 << 20).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Unauthorised { .. }), "{err:?}");

    // A missing service key is a configuration error naming the field.
    let cfg = ArtifactStoreConfig::Supabase {
        url: server.url(),
        bucket: "plan-artifacts".into(),
        service_key: None,
    };
    let err = Store::from_config(&cfg, None).unwrap_err();
    assert!(
        err.to_string().contains("tendril.artifacts.service_key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_on_moto() {
    let moto = Moto::start();
    let creds = S3Credentials {
        access_key_id: moto::ACCESS_KEY_ID.into(),
        secret_access_key: Secret::new(moto::SECRET_ACCESS_KEY.into()),
        session_token: None,
    };
    let resp = reqwest::Client::new()
        .put(format!("{}/plan-artifacts", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let cfg = ArtifactStoreConfig::S3 {
        bucket: "plan-artifacts".into(),
        region: Some("eu-west-1".into()),
        endpoint: Some(moto.endpoint()),
        prefix: Some("plans/".into()),
    };
    let store = Store::from_config(&cfg, Some(creds.clone())).unwrap();
    round_trip(&store).await;
    // The objects are under the prefix.
    let raw = S3Store::new(
        "plan-artifacts",
        "eu-west-1",
        Some(&moto.endpoint()),
        "",
        creds,
    )
    .unwrap();
    let manifest = raw
        .get_object(&format!("plans/{JOB}/{MANIFEST_FILE}"), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8(manifest).unwrap().contains(JOB));
    rejects_truncated_and_corrupt(&store).await;

    // Without credentials an S3 store cannot be made, and says what to set.
    let err = Store::from_config(&cfg, None).unwrap_err();
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
}
