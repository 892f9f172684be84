//! TLS to PostgreSQL (a real PostgreSQL started with `ssl=on` and a test CA
//! made with openssl): a good CA connects over TLS, a wrong CA or host name
//! is refused with a clear error, `sslmode=disable` is plaintext.

use std::path::Path;
use std::process::Command;
use tendril::Secret;
use tendril::queue::postgres::connect;
use tendril_testkit::postgres::Postgres;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for this test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signed for `localhost` (no IP address).
fn make_certs(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=tendril test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

async fn ssl_in_use(url: String) -> Result<bool, String> {
    let client = connect(&Secret::new(url))
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_with_the_right_ca_and_refuses_a_wrong_ca_or_host() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let pg = Postgres::start_tls(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let port = pg.port();
    let ca = dir.path().join("ca.pem");
    let other = dir.path().join("other-ca.pem");
    let url = |host: &str, q: String| format!("postgres://postgres@{host}:{port}/postgres?{q}");

    // The right CA, the right name: TLS.
    let ok = ssl_in_use(url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .await;
    assert_eq!(ok, Ok(true));

    // A CA that did not sign the server's certificate.
    let err = ssl_in_use(url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={}", other.display()),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("not signed by the CA in sslrootcert"), "{err}");

    // The certificate is for `localhost`, not for 127.0.0.1.
    let err = ssl_in_use(url(
        "127.0.0.1",
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("not valid for the host name"), "{err}");
    // verify-ca checks the chain only.
    let ok = ssl_in_use(url(
        "127.0.0.1",
        format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    ))
    .await;
    assert_eq!(ok, Ok(true));

    // An unreadable sslrootcert is named.
    let err = ssl_in_use(url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into(),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");

    // require encrypts without checking; disable is plaintext; loopback
    // without sslmode prefers TLS.
    assert_eq!(
        ssl_in_use(url("127.0.0.1", "sslmode=require".into())).await,
        Ok(true)
    );
    assert_eq!(
        ssl_in_use(url("127.0.0.1", "sslmode=disable".into())).await,
        Ok(false)
    );
    assert_eq!(ssl_in_use(url("127.0.0.1", String::new())).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_when_tls_is_required() {
    let pg = Postgres::shared();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        pg.port()
    );
    let err = ssl_in_use(url).await.unwrap_err();
    assert!(
        err.contains("does not speak TLS") || err.contains("TLS"),
        "{err}"
    );
    // without sslmode, a loopback server without TLS is still reached
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    assert_eq!(ssl_in_use(url).await, Ok(false));
}
