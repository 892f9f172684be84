//! GCP and Azure tokens against local endpoints that check what the real ones check.

use std::path::Path;

use tendril::cloud::azure::{AzureCredential, AzureIdentity, AzureTokenSource};
use tendril::cloud::gcp::{GcpCredentialSource, GcpTokenSource};
use tendril::cloud::{CachedToken, TokenSource};
use tendril::kubeconfig::aks;
use tendril_testkit::tokens::{AzureEndpoints, GoogleEndpoints, Issuer, RsaKey};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn secs_left(t: &tendril::cloud::AccessToken) -> i64 {
    t.expires_at.as_second() - jiff::Timestamp::now().as_second()
}

#[test]
fn gcp_service_account_key_jwt_grant() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "sa.json", &google.service_account_key_json());
    let source = GcpCredentialSource::from_file(&key).unwrap();
    assert!(
        !format!("{source:?}").contains("PRIVATE KEY"),
        "Debug must not show the key"
    );
    let token = rt()
        .block_on(GcpTokenSource::new(source).unwrap().fetch_token())
        .unwrap();
    assert!(token.token.expose().starts_with("ya29.sa-"));
    assert!((3500..=3600).contains(&secs_left(&token)));
}

#[test]
fn gcp_service_account_key_signed_by_another_key_is_refused() {
    let google = GoogleEndpoints::start(3600);
    let mut doc: serde_json::Value =
        serde_json::from_str(&google.service_account_key_json()).unwrap();
    doc["private_key"] = RsaKey::generate().private_pem.into();
    let source = GcpCredentialSource::from_json(&doc.to_string()).unwrap();
    let err = rt()
        .block_on(GcpTokenSource::new(source).unwrap().fetch_token())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Google OAuth2") && err.contains("invalid_grant"),
        "{err}"
    );
    assert!(err.contains(&google.sa_email), "{err}");
}

#[test]
fn gcp_workload_identity_with_and_without_impersonation() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    let subject = write(dir.path(), "subject.jwt", &google.subject_token(600));

    let direct = write(
        dir.path(),
        "wif.json",
        &google.external_account_json(&subject, false),
    );
    let src = GcpCredentialSource::from_file(&direct).unwrap();
    let t = rt()
        .block_on(GcpTokenSource::new(src).unwrap().fetch_token())
        .unwrap();
    assert!(t.token.expose().starts_with("ya29.federated-"));

    let imp = write(
        dir.path(),
        "wif-imp.json",
        &google.external_account_json(&subject, true),
    );
    let src = GcpCredentialSource::from_file(&imp).unwrap();
    let t = rt()
        .block_on(GcpTokenSource::new(src).unwrap().fetch_token())
        .unwrap();
    assert!(
        t.token.expose().starts_with("ya29.impersonated-"),
        "the impersonated token is returned"
    );
    assert!(
        (3500..=3600).contains(&secs_left(&t)),
        "expiry from expireTime"
    );
}

#[test]
fn gcp_workload_identity_rejections() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    // expired subject token
    let expired = write(dir.path(), "expired.jwt", &google.subject_token(-120));
    let cfg = write(
        dir.path(),
        "a.json",
        &google.external_account_json(&expired, false),
    );
    let err = rt()
        .block_on(
            GcpTokenSource::new(GcpCredentialSource::from_file(&cfg).unwrap())
                .unwrap()
                .fetch_token(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Google STS") && err.contains("subject token is invalid"),
        "{err}"
    );
    // a token from an issuer the provider does not trust
    let stranger = Issuer::new(&google.issuer.iss);
    let forged = write(
        dir.path(),
        "forged.jwt",
        &stranger.mint("x", &format!("https:{}", google.audience), 600),
    );
    let cfg = write(
        dir.path(),
        "b.json",
        &google.external_account_json(&forged, false),
    );
    let err = rt()
        .block_on(
            GcpTokenSource::new(GcpCredentialSource::from_file(&cfg).unwrap())
                .unwrap()
                .fetch_token(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InvalidSignature") || err.contains("signature"),
        "{err}"
    );
    // a wrong audience in the configuration
    let good = write(dir.path(), "good.jwt", &google.subject_token(600));
    let mut doc: serde_json::Value =
        serde_json::from_str(&google.external_account_json(&good, false)).unwrap();
    doc["audience"] =
        "//iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/x/providers/y"
            .into();
    let err = rt()
        .block_on(
            GcpTokenSource::new(GcpCredentialSource::from_json(&doc.to_string()).unwrap())
                .unwrap()
                .fetch_token(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid_target"), "{err}");
}

#[test]
fn gcp_unreadable_subject_token_file_names_the_file() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let cfg = write(
        dir.path(),
        "c.json",
        &google.external_account_json(&missing, false),
    );
    let err = rt()
        .block_on(
            GcpTokenSource::new(GcpCredentialSource::from_file(&cfg).unwrap())
                .unwrap()
                .fetch_token(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("subject token file") && err.contains("no-such-token"),
        "{err}"
    );
}

#[test]
fn gcp_bad_credential_documents() {
    let err = GcpCredentialSource::from_json(r#"{"type":"authorized_user"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("service_account") && err.contains("external_account"),
        "{err}"
    );
    let err = GcpCredentialSource::from_json(
        r#"{"type":"external_account","audience":"a","subject_token_type":"t","credential_source":{}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`file` or `url`"), "{err}");
    let err = GcpCredentialSource::from_file(Path::new("/nonexistent/creds.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/creds.json"), "{err}");
}

fn identity(az: &AzureEndpoints, credential: AzureCredential) -> AzureIdentity {
    AzureIdentity {
        tenant_id: az.tenant_id.clone(),
        client_id: az.client_id.clone(),
        credential,
        authority_host: Some(az.authority()),
    }
}

#[test]
fn azure_federated_token_for_the_aks_scope() {
    let az = AzureEndpoints::start(3599);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "azure-identity-token", &az.assertion(600));
    let id = identity(&az, AzureCredential::FederatedTokenFile(file.clone()));
    let t = rt()
        .block_on(aks::token_source(id.clone()).fetch())
        .unwrap();
    assert!(t.token.expose().starts_with("aad-"));
    assert_eq!(
        az.scopes.lock().unwrap().as_slice(),
        ["6dae42f8-4368-4678-94ff-3960e28e3630/.default"]
    );
    assert!((3500..=3599).contains(&secs_left(&t)));

    // the file is re-read: a rotated (expired) token is refused
    std::fs::write(&file, az.assertion(-60)).unwrap();
    let err = rt()
        .block_on(id.token(aks::AKS_SCOPE))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Azure AD") && err.contains("AADSTS700024"),
        "{err}"
    );
}

#[test]
fn azure_rejections() {
    let az = AzureEndpoints::start(3599);
    let dir = tempfile::tempdir().unwrap();
    // wrong subject
    let file = write(
        dir.path(),
        "t1",
        &az.issuer.mint(
            "system:serviceaccount:other:sa",
            "api://AzureADTokenExchange",
            600,
        ),
    );
    let err = rt()
        .block_on(identity(&az, AzureCredential::FederatedTokenFile(file)).token(aks::AKS_SCOPE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("AADSTS70021"), "{err}");
    // wrong audience
    let file = write(
        dir.path(),
        "t2",
        &az.issuer.mint(&az.subject, "api://other", 600),
    );
    let err = rt()
        .block_on(identity(&az, AzureCredential::FederatedTokenFile(file)).token(aks::AKS_SCOPE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("AADSTS700024"), "{err}");
    // a scope without /.default
    let err = rt()
        .block_on(
            identity(
                &az,
                AzureCredential::ClientSecret(az.client_secret.clone().into()),
            )
            .token(aks::AKS_SERVER_APP_ID),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid_scope"), "{err}");
    // a wrong secret, never echoed
    let err = rt()
        .block_on(
            identity(
                &az,
                AzureCredential::ClientSecret("guess-123".to_string().into()),
            )
            .token(aks::AKS_SCOPE),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("AADSTS7000215") && !err.contains("guess-123"),
        "{err}"
    );
    // the right secret
    let t = rt()
        .block_on(
            identity(
                &az,
                AzureCredential::ClientSecret(az.client_secret.clone().into()),
            )
            .token(aks::AKS_SCOPE),
        )
        .unwrap();
    assert!(t.token.expose().starts_with("aad-"));
    // unknown tenant
    let mut id = identity(
        &az,
        AzureCredential::ClientSecret(az.client_secret.clone().into()),
    );
    id.tenant_id = "00000000-0000-0000-0000-000000000000".into();
    let err = rt()
        .block_on(id.token(aks::AKS_SCOPE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("AADSTS90002"), "{err}");
    // unreadable token file
    let id = identity(
        &az,
        AzureCredential::FederatedTokenFile(dir.path().join("missing-token")),
    );
    let err = rt()
        .block_on(id.token(aks::AKS_SCOPE))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("federated token file") && err.contains("missing-token"),
        "{err}"
    );
}

#[test]
fn cached_tokens_refresh_before_expiry() {
    // tokens that live 60 s, with a 120 s refresh margin: every read fetches anew
    let az = AzureEndpoints::start(60);
    let id = identity(
        &az,
        AzureCredential::ClientSecret(az.client_secret.clone().into()),
    );
    let cached = CachedToken::new(AzureTokenSource::new(id.clone(), aks::AKS_SCOPE));
    let a = rt().block_on(cached.token()).unwrap();
    let b = rt().block_on(cached.token()).unwrap();
    assert_ne!(
        a.token.expose(),
        b.token.expose(),
        "a token about to expire is replaced"
    );
    // long-lived tokens are reused
    let az = AzureEndpoints::start(3600);
    let id = identity(
        &az,
        AzureCredential::ClientSecret(az.client_secret.clone().into()),
    );
    let cached = CachedToken::new(AzureTokenSource::new(id, aks::AKS_SCOPE));
    let a = rt().block_on(cached.token()).unwrap();
    let b = rt().block_on(cached.token()).unwrap();
    assert_eq!(a.token.expose(), b.token.expose());
    assert_eq!(az.scopes.lock().unwrap().len(), 1, "one request only");
}

#[test]
fn cli_token_gke_and_aks() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "sa.json", &google.service_account_key_json());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(["token", "gke"])
        .env_clear()
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "ExecCredential");
    assert!(
        v["status"]["token"]
            .as_str()
            .unwrap()
            .starts_with("ya29.sa-")
    );
    assert!(
        v["status"]["expirationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let az = AzureEndpoints::start(3600);
    let file = write(dir.path(), "fed", &az.assertion(600));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(["token", "aks"])
        .env_clear()
        .env("AZURE_TENANT_ID", &az.tenant_id)
        .env("AZURE_CLIENT_ID", &az.client_id)
        .env("AZURE_FEDERATED_TOKEN_FILE", &file)
        .env("AZURE_AUTHORITY_HOST", az.authority())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["status"]["token"].as_str().unwrap().starts_with("aad-"));

    // no credential at all: a clear error
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(["token", "aks", "--tenant-id", "t", "--client-id", "c"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
}

#[test]
fn gcp_workload_identity_from_job_parts() {
    let google = GoogleEndpoints::start(3600);
    let dir = tempfile::tempdir().unwrap();
    let subject = write(dir.path(), "s.jwt", &google.subject_token(600));
    let src = tendril::cloud::gcp::SubjectTokenSource {
        file: Some(subject),
        url: None,
        headers: Default::default(),
        format: None,
    };
    let cred = GcpCredentialSource::workload_identity(
        &google.audience,
        src.clone(),
        Some(&google.sa_email),
    )
    .unwrap();
    let GcpCredentialSource::ExternalAccount(mut ext) = cred else {
        panic!("external account")
    };
    assert!(
        ext.service_account_impersonation_url
            .as_deref()
            .unwrap()
            .ends_with(
                "/serviceAccounts/deployer@shop-prod.iam.gserviceaccount.com:generateAccessToken"
            )
    );
    // point the real Google URLs at the local endpoints and exchange
    ext.token_url = format!("{}/v1/token", google.url());
    ext.service_account_impersonation_url = Some(format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        google.url(),
        google.sa_email
    ));
    let t = rt()
        .block_on(
            GcpTokenSource::new(GcpCredentialSource::ExternalAccount(ext))
                .unwrap()
                .fetch_token(),
        )
        .unwrap();
    assert!(t.token.expose().starts_with("ya29.impersonated-"));
    let err = GcpCredentialSource::workload_identity("projects/1/pools/x", src, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wif_config.audience"), "{err}");
}

#[test]
fn aks_local_account_kubeconfig_through_arm() {
    use tendril::kubeconfig::aks::{LocalAccount, local_account_kubeconfig};
    let az = AzureEndpoints::start(3600);
    *az.cluster_kubeconfig.lock().unwrap() = "apiVersion: v1\nkind: Config\nclusters:\n- name: shop-prod\n  cluster:\n    server: https://shop-prod.hcp.westeurope.azmk8s.io:443\ncontexts:\n- name: shop-prod\n  context:\n    cluster: shop-prod\n    user: clusterUser_shop-prod_shop-prod\nusers:\n- name: clusterUser_shop-prod_shop-prod\n  user:\n    token: local-account-token\ncurrent-context: shop-prod\n".to_string();
    let id = identity(
        &az,
        AzureCredential::ClientSecret(az.client_secret.clone().into()),
    );
    let kc = rt()
        .block_on(local_account_kubeconfig(
            &id,
            &az.cluster_id,
            LocalAccount::User,
            Some(&az.arm()),
        ))
        .unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("shop-prod"));
    assert_eq!(
        az.scopes.lock().unwrap().as_slice(),
        ["https://management.azure.com/.default"]
    );
    // another cluster: ARM's 404 is passed on with the cluster ID
    let other = az
        .cluster_id
        .replace("shop-prod/providers", "other/providers");
    let err = rt()
        .block_on(local_account_kubeconfig(
            &id,
            &other,
            LocalAccount::Admin,
            Some(&az.arm()),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ResourceNotFound") && err.contains("listClusterAdminCredential"),
        "{err}"
    );
    // not a resource ID at all
    let err = rt()
        .block_on(local_account_kubeconfig(
            &id,
            "shop-prod",
            LocalAccount::User,
            Some(&az.arm()),
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster_id"), "{err}");
}
