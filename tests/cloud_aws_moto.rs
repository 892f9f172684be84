//! AWS credentials and EKS DescribeCluster against moto's server.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use base64::Engine;
use tendril::cloud::Provider;
use tendril::cloud::aws::{AwsCredentials, AwsOptions, AwsRole};
use tendril::facts::{InfraFacts, OutputMapping};
use tendril::kubeconfig::eks;
use tendril_testkit::moto::{self, Moto};

const ROLE: &str = "arn:aws:iam::123456789012:role/GrapeProvisionerRole";
const REGION: &str = "eu-west-1";

fn options(moto: &Moto) -> AwsOptions {
    AwsOptions {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint()),
        ..Default::default()
    }
}

fn base(moto: &Moto) -> AwsCredentials {
    let creds = Credentials::new(
        moto::ACCESS_KEY_ID,
        moto::SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    AwsCredentials::from_static(creds, REGION, &options(moto))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn assume_role_uses_job_session_name_external_id_and_one_hour() {
    let moto = Moto::start();
    rt().block_on(async {
        let role = AwsRole::for_job(ROLE, Some("ext-123".to_string().into()), "3f0c9a52").unwrap();
        assert_eq!(role.session_name, "tendril-3f0c9a52");
        let creds = base(&moto)
            .assume_role(&role, &options(&moto))
            .await
            .unwrap();
        let c = creds.credentials().await.unwrap();
        assert!(
            c.session_token().is_some(),
            "assumed credentials carry a session token"
        );
        assert_ne!(c.access_key_id(), moto::ACCESS_KEY_ID);
        let expiry = c.expiry().expect("assumed credentials expire");
        let left = expiry.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(3000) && left <= Duration::from_secs(3600),
            "{left:?}"
        );

        // the caller identity is the assumed role with the job's session name
        let sts = aws_sdk_sts::Client::new(&creds.sdk_config().await);
        let me = sts.get_caller_identity().send().await.unwrap();
        let arn = me.arn().unwrap();
        assert!(
            arn.contains("assumed-role/GrapeProvisionerRole/tendril-3f0c9a52"),
            "{arn}"
        );

        // same credentials while fresh
        let again = creds.credentials().await.unwrap();
        assert_eq!(again.access_key_id(), c.access_key_id());

        // Debug shows neither key nor token
        let dbg = format!("{creds:?}");
        assert!(
            !dbg.contains(c.secret_access_key()) && !dbg.contains(c.access_key_id()),
            "{dbg}"
        );

        // credentials for a child process
        let env = creds.child_env().await.unwrap();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_REGION",
                "AWS_DEFAULT_REGION"
            ]
        );
        assert!(!format!("{env:?}").contains(c.secret_access_key()));
    });
}

#[test]
fn credentials_are_refreshed_before_they_expire() {
    let moto = Moto::start();
    rt().block_on(async {
        // a refresh margin longer than the session: every read is "about to expire"
        let opts = AwsOptions {
            refresh_before: Duration::from_secs(3700),
            ..options(&moto)
        };
        let role = AwsRole::for_job(ROLE, None, "refresh").unwrap();
        let creds = base(&moto).assume_role(&role, &opts).await.unwrap();
        let first = creds.credentials().await.unwrap();
        let second = creds.credentials().await.unwrap();
        assert_ne!(
            first.access_key_id(),
            second.access_key_id(),
            "expiring credentials are replaced"
        );

        // the EKS token source signs with the current credentials every time
        let source = eks::EksTokenSource::new(creds.clone(), "shop", REGION);
        let t1 = tendril::cloud::TokenSource::fetch(&source).await.unwrap();
        let t2 = tendril::cloud::TokenSource::fetch(&source).await.unwrap();
        assert_ne!(t1.token.expose(), t2.token.expose());
    });
}

#[test]
fn malformed_role_arn_is_a_clear_error() {
    let err = AwsRole::for_job("arn:aws:iam::12345:role/x", None, "j")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("role_arn") && err.contains("12 digits"),
        "{err}"
    );
}

#[test]
fn failed_assume_role_names_the_role() {
    rt().block_on(async {
        // nothing listens on a port bound and released at once
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = AwsOptions {
            region: Some(REGION.into()),
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        };
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        let base = AwsCredentials::from_static(creds, REGION, &opts);
        let role = AwsRole::for_job(ROLE, None, "unreachable").unwrap();
        let err = base
            .assume_role(&role, &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(ROLE) && err.contains("AssumeRole"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    });
}

fn create_cluster(moto: &Moto, name: &str) -> String {
    rt().block_on(async {
        let conf = base(moto).sdk_config().await;
        let eks = aws_sdk_eks::Client::new(&conf);
        let out = eks
            .create_cluster()
            .name(name)
            .role_arn("arn:aws:iam::123456789012:role/eks")
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigRequest::builder()
                    .subnet_ids("subnet-1")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.cluster.unwrap().arn.unwrap()
    })
}

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBqzCCAVGgAwIBAgIUVjFEU85ABwj3+CpGyXQyGBM2XYIwCgYIKoZIzj0EAwIw\nIjEgMB4GA1UEAwwXdGVuZHJpbCBkZW1vIGNsdXN0ZXIgQ0EwIBcNMjYxMjAxMjE1\nMzA2WhgPMjEyNjExMDcyMTUzMDZaMCIxIDAeBgNVBAMMF3RlbmRyaWwgZGVtbyBj\nbHVzdGVyIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERX5Ix0Wf58GmIICm\nh6CrJeGdvYmZhwYgeKix/JhyTEaSirbxZVMp9psLEnuPgK7liL8KVe38t8PGlAte\niyuxQ6NjMGEwHQYDVR0OBBYEFOtFOBFRZgWSGw/3aftMpD1xCSqKMB8GA1UdIwQY\nMBaAFOtFOBFRZgWSGw/3aftMpD1xCSqKMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P\nAQH/BAQDAgEGMAoGCCqGSM49BAMCA0gAMEUCIQCk4V6A35SJLGutwCEXTn5mBYxT\n1rZqnf1JokksMoe3JQIgCPLih1T3tcnd5SR5xCac1BNrFfTIHGBEbK5dEYxbUUQ=\n-----END CERTIFICATE-----\n";

#[test]
fn describe_cluster_fills_a_missing_endpoint() {
    let moto = Moto::start();
    let arn = create_cluster(&moto, "shop-prod");
    let outputs = serde_json::json!({
        "eks_cluster_name": {"sensitive": false, "type": "string", "value": "shop-prod"},
        "eks_cluster_certificate_authority_data": {"sensitive": false, "type": "string",
            "value": base64::engine::general_purpose::STANDARD.encode(CA_PEM)},
    });
    let mapping = OutputMapping::with_overrides(Provider::Aws, &BTreeMap::new()).unwrap();
    let mut facts = InfraFacts::from_outputs(Provider::Aws, &outputs, &mapping)
        .unwrap()
        .cluster;
    assert!(facts.endpoint.is_none());
    rt().block_on(eks::complete_from_describe(&mut facts, &base(&moto)))
        .unwrap();
    let endpoint = facts.endpoint.as_ref().unwrap().to_string();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    assert_eq!(facts.id.as_deref(), Some(arn.as_str()));
    assert_eq!(
        facts.ca.as_ref().unwrap().pem(),
        CA_PEM,
        "the CA from the outputs is kept"
    );
    assert!(
        facts
            .source_of("cluster_endpoint")
            .contains("DescribeCluster")
    );
}

#[test]
fn describe_cluster_of_an_unknown_cluster_names_it() {
    let moto = Moto::start();
    let outputs = serde_json::json!({"eks_cluster_name": {"value": "nope"}});
    let mapping = OutputMapping::defaults(Provider::Aws);
    let mut facts = InfraFacts::from_outputs(Provider::Aws, &outputs, &mapping)
        .unwrap()
        .cluster;
    let err = rt()
        .block_on(eks::complete_from_describe(&mut facts, &base(&moto)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DescribeCluster `nope`") && err.contains(REGION),
        "{err}"
    );
}

#[test]
fn describe_cluster_with_an_unusable_ca_says_where_it_came_from() {
    // moto returns random text as certificate authority data
    let moto = Moto::start();
    create_cluster(&moto, "bad-ca");
    let outputs = serde_json::json!({"eks_cluster_name": {"value": "bad-ca"}});
    let mapping = OutputMapping::defaults(Provider::Aws);
    let mut facts = InfraFacts::from_outputs(Provider::Aws, &outputs, &mapping)
        .unwrap()
        .cluster;
    let err = rt()
        .block_on(eks::complete_from_describe(&mut facts, &base(&moto)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("EKS DescribeCluster `bad-ca`") && err.contains("certificate authority"),
        "{err}"
    );
}

fn tendril() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tendril"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent");
    c
}

fn token_url(stdout: &[u8]) -> (serde_json::Value, String) {
    let v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    let token = v["status"]["token"].as_str().unwrap();
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.strip_prefix("k8s-aws-v1.").unwrap())
        .unwrap();
    (v, String::from_utf8(url).unwrap())
}

#[test]
fn cli_token_eks_with_env_credentials() {
    let out = tendril()
        .args([
            "token",
            "eks",
            "--cluster",
            "shop-prod",
            "--region",
            "eu-west-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, url) = token_url(&out.stdout);
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1beta1");
    let exp = v["status"]["expirationTimestamp"].as_str().unwrap();
    let exp: jiff::Timestamp = exp.parse().unwrap();
    let left = exp.as_second() - jiff::Timestamp::now().as_second();
    assert!((13 * 60..=14 * 60).contains(&left), "{left}");
    assert!(
        url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity"),
        "{url}"
    );
    assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F"), "{url}");

    // kubectl's KUBERNETES_EXEC_INFO chooses the API version
    let out = tendril()
        .args(["token", "eks", "--cluster-name", "c"])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-west-2")
        .env("KUBERNETES_EXEC_INFO", r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, url) = token_url(&out.stdout);
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert!(url.contains("sts.us-west-2.amazonaws.com"));
}

#[test]
fn cli_token_eks_assumes_a_role() {
    let moto = Moto::start();
    let out = tendril()
        .args(["token", "eks", "--cluster", "shop-prod", "--role-arn", ROLE])
        .envs(moto.client_env(REGION))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, url) = token_url(&out.stdout);
    assert!(
        url.contains("X-Amz-Security-Token="),
        "signed with assumed credentials: {url}"
    );
    assert!(!url.contains("X-Amz-Credential=testing%2F"), "{url}");
    // the token names the real regional endpoint, not the override
    assert!(
        url.starts_with("https://sts.eu-west-1.amazonaws.com/"),
        "{url}"
    );
}

#[test]
fn cli_token_errors_are_clear_and_nonzero() {
    let out = tendril()
        .args([
            "token",
            "eks",
            "--cluster",
            "c",
            "--role-arn",
            "not-an-arn",
            "--region",
            "eu-west-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "A")
        .env("AWS_SECRET_ACCESS_KEY", "B")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("role_arn") && err.contains("not-an-arn"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
