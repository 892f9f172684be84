//! kube-rs clients built from cluster facts: TLS verified against the CA from
//! the outputs, bearer tokens refreshed before expiry, clear errors naming the
//! output that was wrong. The peer is an HTTPS server with its own CA that
//! answers `GET /api` as an API server does (401 unless the token is valid).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use base64::Engine;
use futures::future::BoxFuture;
use tendril::cloud::Provider;
use tendril::cloud::aws::{AwsCredentials, AwsOptions};
use tendril::cloud::{AccessToken, CloudError, TokenSource};
use tendril::facts::{CaBundle, ClusterFacts, Endpoint};
use tendril::kubeconfig::{self, KubeconfigError, eks};
use tendril_testkit::tokens::{TestCa, TlsApi};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn facts(endpoint: &str, ca_pem: &str) -> ClusterFacts {
    let mut sources = BTreeMap::new();
    sources.insert(
        "cluster_endpoint".to_string(),
        "eks_cluster_endpoint".to_string(),
    );
    sources.insert(
        "cluster_ca".to_string(),
        "eks_cluster_certificate_authority_data".to_string(),
    );
    ClusterFacts {
        provider: Provider::Aws,
        name: "shop-prod".into(),
        endpoint: Some(Endpoint::parse_api_server(endpoint).unwrap()),
        id: None,
        ca: Some(CaBundle::parse(ca_pem).unwrap()),
        region: Some("eu-west-1".into()),
        sources,
    }
}

/// Tokens `tok-<n>-<unix expiry>` that live `ttl` seconds.
struct Counting {
    n: AtomicU64,
    ttl: u64,
}

impl TokenSource for Counting {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        Box::pin(async move {
            let n = self.n.fetch_add(1, Ordering::SeqCst);
            let exp = jiff::Timestamp::now().as_second() + self.ttl as i64;
            Ok(AccessToken {
                token: format!("tok-{n}-{exp}").into(),
                expires_at: jiff::Timestamp::from_second(exp).unwrap(),
            })
        })
    }
}

/// A source that claims its one token lasts a day (it does not).
struct Stale(String);

impl TokenSource for Stale {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, CloudError>> {
        let t = self.0.clone();
        Box::pin(async move {
            Ok(AccessToken {
                token: t.into(),
                expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
            })
        })
    }
}

/// The server accepts `tok-<n>-<exp>` only before `exp`.
fn unexpired(token: &str) -> bool {
    token
        .rsplit('-')
        .next()
        .and_then(|e| e.parse::<i64>().ok())
        .is_some_and(|exp| exp > jiff::Timestamp::now().as_second())
}

#[test]
fn tokens_are_refreshed_so_a_wait_does_not_end_in_401() {
    let api = TlsApi::start(unexpired);
    let f = facts(&api.url(), &api.ca_pem);
    // tokens live 3 s; the client replaces them before expiry
    rt().block_on(async {
        let client = kubeconfig::client_for_cluster(
            &f,
            Counting {
                n: AtomicU64::new(0),
                ttl: 3,
            },
        )
        .unwrap();
        kubeconfig::verify_access(&client, &f).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        kubeconfig::verify_access(&client, &f).await.unwrap();
    });
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1], "a fresh token after the wait");

    // the same wait with a token that is never refreshed fails: the server check bites
    let f2 = f.clone();
    let exp = jiff::Timestamp::now().as_second() + 2;
    let err = rt().block_on(async {
        let client = kubeconfig::client_for_cluster(&f2, Stale(format!("tok-x-{exp}"))).unwrap();
        kubeconfig::verify_access(&client, &f2).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        kubeconfig::verify_access(&client, &f2).await.unwrap_err()
    });
    assert!(
        matches!(err, KubeconfigError::Unauthorized { status: 401, .. }),
        "{err}"
    );
}

#[test]
fn wrong_ca_is_an_error_naming_the_output() {
    let api = TlsApi::start(|_| true);
    let other = TestCa::new();
    let f = facts(&api.url(), &other.ca_pem);
    let err = rt().block_on(async {
        let client = kubeconfig::client_for_cluster(
            &f,
            Counting {
                n: AtomicU64::new(0),
                ttl: 600,
            },
        )
        .unwrap();
        kubeconfig::verify_access(&client, &f).await.unwrap_err()
    });
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, KubeconfigError::CaMismatch { .. }), "{msg}");
    assert!(
        msg.contains("eks_cluster_certificate_authority_data") && msg.contains(&api.url()),
        "{msg}"
    );
    assert!(
        api.seen.lock().unwrap().is_empty(),
        "no request (and no token) reached an unverified server"
    );
}

#[test]
fn malformed_ca_and_bad_endpoint_name_their_outputs() {
    let api = TlsApi::start(|_| true);
    // PEM-shaped but not a certificate: refused where the output is read,
    // naming it
    let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let outputs = serde_json::json!({
        "eks_cluster_name": {"value": "shop-prod"},
        "eks_cluster_certificate_authority_data": {"value": bogus},
    });
    let mapping = tendril::facts::OutputMapping::defaults(Provider::Aws);
    let err = tendril::facts::InfraFacts::from_outputs(Provider::Aws, &outputs, &mapping)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eks_cluster_certificate_authority_data") && err.contains("X.509"),
        "{err}"
    );

    // nothing listens there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = facts(&format!("https://127.0.0.1:{port}"), &api.ca_pem);
    let err = rt().block_on(async {
        let client = kubeconfig::client_for_cluster(
            &f,
            Counting {
                n: AtomicU64::new(0),
                ttl: 600,
            },
        )
        .unwrap();
        kubeconfig::verify_access(&client, &f).await.unwrap_err()
    });
    eprintln!("{err}");
    assert!(matches!(err, KubeconfigError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("eks_cluster_endpoint"), "{err}");

    // missing endpoint
    let mut f = facts(&api.url(), &api.ca_pem);
    f.endpoint = None;
    let err = rt().block_on(async {
        kubeconfig::client_for_cluster(
            &f,
            Counting {
                n: AtomicU64::new(0),
                ttl: 600,
            },
        )
        .err()
        .unwrap()
        .to_string()
    });
    assert!(
        err.contains("endpoint") && err.contains("eks_cluster_endpoint"),
        "{err}"
    );
}

/// Accepts EKS tokens for cluster `shop-prod`: a presigned STS URL with the
/// cluster header signed in.
fn eks_token_for_shop_prod(token: &str) -> bool {
    let Some(b64) = token.strip_prefix("k8s-aws-v1.") else {
        return false;
    };
    let Ok(url) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64) else {
        return false;
    };
    let url = String::from_utf8_lossy(&url);
    url.starts_with(
        "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&",
    ) && url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id")
}

#[test]
fn eks_client_sends_eks_tokens() {
    let api = TlsApi::start(eks_token_for_shop_prod);
    let f = facts(&api.url(), &api.ca_pem);
    let creds = AwsCredentials::from_static(
        Credentials::new("AKIDEXAMPLE", "SECRET", None, None, "test"),
        "eu-west-1",
        &AwsOptions::default(),
    );
    let source = eks::EksTokenSource::new(creds, &f.name, "eu-west-1");
    rt().block_on(async {
        let client = kubeconfig::client_for_cluster(&f, source).unwrap();
        kubeconfig::verify_access(&client, &f).await.unwrap();
    });
    assert!(api.seen.lock().unwrap()[0].starts_with("k8s-aws-v1."));
}

#[test]
fn client_from_kubeconfig_with_an_exec_plugin_running_tendril_token() {
    let api = TlsApi::start(eks_token_for_shop_prod);
    let f = facts(&api.url(), &api.ca_pem);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let auth = kubeconfig::UserAuth::Exec {
        command: env!("CARGO_BIN_EXE_tendril").into(),
        args: [
            "token",
            "eks",
            "--cluster",
            "shop-prod",
            "--region",
            "eu-west-1",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut kc = kubeconfig::kubeconfig_for_cluster(&f, "shop", &auth).unwrap();
    // the plugin's environment, as a CI job would have it
    let exec = kc.auth_infos[0]
        .auth_info
        .as_mut()
        .unwrap()
        .exec
        .as_mut()
        .unwrap();
    exec.env = Some(vec![
        [
            ("name".to_string(), "AWS_ACCESS_KEY_ID".to_string()),
            ("value".to_string(), "AKIDEXAMPLE".to_string()),
        ]
        .into(),
        [
            ("name".to_string(), "AWS_SECRET_ACCESS_KEY".to_string()),
            ("value".to_string(), "SECRET".to_string()),
        ]
        .into(),
    ]);
    kubeconfig::write_kubeconfig(&path, kc).unwrap();
    rt().block_on(async {
        let client = kubeconfig::client_from_kubeconfig(&path, Some("shop"))
            .await
            .unwrap();
        client.list_core_api_versions().await.unwrap();
    });
    assert!(
        api.seen.lock().unwrap()[0].starts_with("k8s-aws-v1."),
        "kube-rs ran `tendril token eks`"
    );
}

#[test]
fn client_from_kubeconfig_refuses_insecure_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insecure");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: abc\ncurrent-context: c\n",
    )
    .unwrap();
    let err = rt()
        .block_on(kubeconfig::client_from_kubeconfig(&path, None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("insecure-skip-tls-verify"), "{err}");
    let missing = dir.path().join("nope");
    let err = rt()
        .block_on(kubeconfig::client_from_kubeconfig(&missing, None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let err = rt()
        .block_on(kubeconfig::client_from_kubeconfig(&path, Some("other")))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("other"), "{err}");
}

/// Runs against a real cluster when `TENDRIL_E2E_KUBECONFIG` names a kubeconfig.
#[test]
fn client_from_e2e_kubeconfig() {
    let Some(path) = std::env::var_os("TENDRIL_E2E_KUBECONFIG") else {
        eprintln!("TENDRIL_E2E_KUBECONFIG not set: covered by the exec-plugin test above");
        return;
    };
    let versions = rt().block_on(async {
        let client = kubeconfig::client_from_kubeconfig(std::path::Path::new(&path), None)
            .await
            .unwrap();
        client.list_core_api_versions().await.unwrap()
    });
    assert!(versions.versions.contains(&"v1".to_string()));
}

#[test]
fn token_expiry_checks() {
    let t = AccessToken {
        token: "x".to_string().into(),
        expires_at: jiff::Timestamp::try_from(SystemTime::now() + Duration::from_secs(100))
            .unwrap(),
    };
    assert!(t.expires_within(Duration::from_secs(120), jiff::Timestamp::now()));
    assert!(!t.expires_within(Duration::from_secs(60), jiff::Timestamp::now()));
}
