//! The EKS token must be byte-for-byte what `aws eks get-token` makes: the aws
//! CLI's own `TokenGenerator` (botocore presigning) is run on the same
//! credentials, region, cluster and a frozen signing time, and compared.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use base64::Engine;
use tendril::kubeconfig::eks;

const REFERENCE: &str = r#"
import sys, json, datetime
from unittest import mock
import botocore.session
from awscli.customizations.eks.get_token import STSClientFactory, TokenGenerator
a = json.loads(sys.argv[1])
session = botocore.session.get_session()
session.set_credentials(a["key"], a["secret"], a.get("token"))
fixed = datetime.datetime.fromtimestamp(a["time"], datetime.timezone.utc).replace(tzinfo=None)
with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
    sts = STSClientFactory(session).get_sts_client(region_name=a["region"])
    print(TokenGenerator(sts).get_token(a["cluster"]))
"#;

fn reference_token(creds: &Credentials, region: &str, cluster: &str, unix: u64) -> String {
    let home = tempfile::tempdir().unwrap();
    let args = serde_json::json!({
        "key": creds.access_key_id(),
        "secret": creds.secret_access_key(),
        "token": creds.session_token(),
        "region": region,
        "cluster": cluster,
        "time": unix,
    });
    let out = Command::new("python3")
        .arg("-c")
        .arg(REFERENCE)
        .arg(args.to_string())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the aws CLI reference failed (is awscli installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn decode(token: &str) -> String {
    let b64 = token
        .strip_prefix(eks::TOKEN_PREFIX)
        .expect("k8s-aws-v1. prefix");
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn check(creds: Credentials, region: &str, cluster: &str, unix: u64) {
    let at = UNIX_EPOCH + Duration::from_secs(unix);
    let ours = eks::token(&creds, region, cluster, at).unwrap();
    let theirs = reference_token(&creds, region, cluster, unix);
    assert_eq!(
        decode(ours.token.expose()),
        decode(&theirs),
        "presigned URLs differ"
    );
    assert_eq!(ours.token.expose(), &theirs, "tokens differ");
    let url = decode(&theirs);
    assert!(url.starts_with(&format!(
        "https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity"
    )));
    assert!(url.contains("X-Amz-Expires=60"));
    assert!(url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"));
    assert!(!ours.token.expose().ends_with('='));
    // valid 14 minutes from signing
    assert_eq!(ours.expires_at.as_second(), (unix + 14 * 60) as i64);
}

#[test]
fn matches_aws_cli_with_static_credentials() {
    let creds = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "test",
    );
    check(creds, "eu-west-1", "shop-prod", 1_767_323_045);
}

#[test]
fn matches_aws_cli_with_a_session_token_and_odd_cluster_name() {
    let creds = Credentials::new(
        "ASIAXAMPLEKEY0000001",
        "secret+with/slash=and+plus",
        Some("FwoGZXIvYXdzEJr//////////wEaDAbc+def/ghi==token".into()),
        None,
        "test",
    );
    check(creds, "us-east-2", "my_cluster-01.v2", 1_800_000_000);
}

#[test]
fn token_expiry_is_capped_by_the_credentials() {
    let at = SystemTime::now();
    let creds = Credentials::new(
        "AKID",
        "SECRET",
        Some("T".into()),
        Some(at + Duration::from_secs(300)),
        "test",
    );
    let t = eks::token(&creds, "eu-west-1", "c", at).unwrap();
    let expiry = jiff::Timestamp::try_from(at + Duration::from_secs(300)).unwrap();
    assert_eq!(t.expires_at, expiry);
    assert!(
        !format!("{t:?}").contains("k8s-aws-v1"),
        "Debug must not show the token"
    );
}

#[test]
fn bad_region_and_cluster_are_refused() {
    let creds = Credentials::new("AKID", "SECRET", None, None, "test");
    let err = eks::token(&creds, "EU WEST", "c", SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("region"), "{err}");
    let err = eks::token(&creds, "eu-west-1", "", SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster"), "{err}");
}
