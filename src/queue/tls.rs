//! TLS to PostgreSQL, with rustls (aws-lc-rs), configured from the connection
//! URL as libpq spells it: `?sslmode=...&sslrootcert=FILE`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never (plaintext) | — |
//! | `allow`, `prefer` | loopback: if the server offers it; any other host: always | not checked (checked against `sslrootcert` when given) |
//! | `require` | always | not checked (checked against `sslrootcert` when given, as libpq does) |
//! | `verify-ca` | always | signed by `sslrootcert` (default: the system's roots) |
//! | `verify-full` | always | as `verify-ca`, and valid for the host name in the URL |
//!
//! Without `sslmode`: `prefer` for a loopback host or a Unix socket,
//! `verify-full` for any other host. Plaintext reaches a non-loopback host
//! only with an explicit `sslmode=disable`.

use super::QueueError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{Client, Config, NoTls};

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext.
    Disable,
    /// TLS if the server offers it (libpq tries plaintext first).
    Allow,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, certificate not checked.
    Require,
    /// TLS, certificate chain checked.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// How the certificate of the server is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (`require`, `prefer` without `sslrootcert`).
    Nothing,
    /// The chain up to a trusted root.
    Chain,
    /// The chain and the host name.
    ChainAndHost,
}

/// What to connect to and how: the URL without its TLS settings, and the
/// TLS policy they asked for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The connection settings tokio-postgres reads.
    pub config: Config,
    /// No TLS at all.
    pub plaintext: bool,
    /// Whether TLS is mandatory.
    pub tls_required: bool,
    /// How the server's certificate is checked.
    pub verify: Verify,
    /// `sslrootcert`: the trusted CA certificates (PEM); default the system's.
    pub root_cert: Option<PathBuf>,
}

fn invalid(message: String) -> QueueError {
    QueueError::Invalid {
        what: "--database-url".into(),
        message,
    }
}

/// Reads a connection URL (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…&sslrootcert=…]`).
pub fn parse(url: &str) -> Result<Target, QueueError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "sslmode" => {
                mode = Some(SslMode::parse(&value).ok_or_else(|| {
                    invalid(format!(
                        "sslmode={value} is not a mode; use disable, allow, prefer, require, verify-ca or verify-full"
                    ))
                })?)
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => rest.push(pair),
        }
    }
    let stripped = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let config: Config = stripped.parse().map_err(|e| {
        invalid(format!(
            "is not a PostgreSQL connection string ({e}); give postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]"
        ))
    })?;
    let local = config.get_hosts().iter().all(is_local);
    let unix = config
        .get_hosts()
        .iter()
        .all(|h| matches!(h, Host::Unix(_)));
    let mode = mode.unwrap_or(if local {
        SslMode::Prefer
    } else {
        SslMode::VerifyFull
    });
    let rooted = root_cert.is_some();
    let (plaintext, tls_required, verify) = match mode {
        SslMode::Disable => (true, false, Verify::Nothing),
        _ if unix => (true, false, Verify::Nothing),
        SslMode::Allow | SslMode::Prefer => (
            false,
            !local,
            if rooted {
                Verify::Chain
            } else {
                Verify::Nothing
            },
        ),
        SslMode::Require => (
            false,
            true,
            if rooted {
                Verify::Chain
            } else {
                Verify::Nothing
            },
        ),
        SslMode::VerifyCa => (false, true, Verify::Chain),
        SslMode::VerifyFull => (false, true, Verify::ChainAndHost),
    };
    let mut config = config;
    config.ssl_mode(if plaintext {
        PgSslMode::Disable
    } else if tls_required {
        PgSslMode::Require
    } else {
        PgSslMode::Prefer
    });
    Ok(Target {
        config,
        plaintext,
        tls_required,
        verify,
        root_cert,
    })
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Connects as the target says; the connection is driven on the current runtime.
pub async fn connect(target: &Target) -> Result<Client, QueueError> {
    if target.plaintext {
        let (client, connection) = target
            .config
            .connect(NoTls)
            .await
            .map_err(|e| connect_error(target, e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("PostgreSQL connection ended: {e}");
            }
        });
        return Ok(client);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(target)?);
    let (client, connection) = target
        .config
        .connect(tls)
        .await
        .map_err(|e| connect_error(target, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

fn connect_error(target: &Target, source: tokio_postgres::Error) -> QueueError {
    if source.code().is_some_and(|c| c.code().starts_with("28")) {
        return QueueError::Unauthorized {
            what: "connect to PostgreSQL".into(),
            status: 401,
        };
    }
    let chain = std::error::Error::source(&source)
        .map(crate::errors::chain_inline)
        .unwrap_or_default();
    let hint = if chain.contains("NotValidForName") || chain.contains("not valid for name") {
        Some(
            "the server's certificate is not valid for the host name in --database-url; connect by the name the certificate carries, or use sslmode=verify-ca",
        )
    } else if chain.contains("UnknownIssuer") || chain.contains("invalid peer certificate") {
        Some(match &target.root_cert {
            Some(_) => {
                "the server's certificate is not signed by the CA in sslrootcert; give the CA that signed it"
            }
            None => {
                "the server's certificate is not signed by a CA this host trusts; give its CA with sslrootcert=FILE"
            }
        })
    } else if chain.contains("server does not support TLS") || source.to_string().contains("TLS") {
        Some(
            "the server does not speak TLS; enable ssl on the server, or (on a private network) use sslmode=disable",
        )
    } else {
        None
    };
    match hint {
        Some(h) => QueueError::Invalid {
            what: "connect to PostgreSQL over TLS".into(),
            message: format!("{h} ({source}: {})", chain.trim()),
        },
        None => QueueError::Database {
            what: "connect to PostgreSQL".into(),
            source,
        },
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(target: &Target) -> Result<RootCertStore, QueueError> {
    let mut store = RootCertStore::empty();
    match &target.root_cert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(format!(
                    "sslrootcert={}: cannot read it ({e}); give the PEM file of the CA that signed the server's certificate",
                    path.display()
                ))
            })?;
            let certs: Vec<CertificateDer<'static>> =
                rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        invalid(format!(
                            "sslrootcert={}: not PEM certificates ({e})",
                            path.display()
                        ))
                    })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(invalid(format!(
                    "sslrootcert={} holds no usable CA certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

fn client_config(target: &Target) -> Result<ClientConfig, QueueError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup failed: {e}")))?;
    let config = match target.verify {
        Verify::ChainAndHost => builder
            .with_root_certificates(roots(target)?)
            .with_no_client_auth(),
        Verify::Chain => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(target)?),
                provider(),
            )
            .build()
            .map_err(|e| invalid(format!("TLS setup failed: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`/`prefer` without `sslrootcert`: encryption without
/// authentication of the server, as libpq does.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_libpq_and_plaintext_needs_disable_off_loopback() {
        let t = parse("postgres://u@db.internal/platform").unwrap();
        assert_eq!(
            (t.plaintext, t.tls_required, t.verify),
            (false, true, Verify::ChainAndHost)
        );
        let t = parse("postgres://u@db.internal/platform?sslmode=prefer").unwrap();
        assert_eq!((t.plaintext, t.tls_required), (false, true));
        let t = parse("postgres://u@db.internal/platform?sslmode=disable").unwrap();
        assert!(t.plaintext);
        let t = parse("postgres://u@127.0.0.1:5432/platform").unwrap();
        assert_eq!((t.plaintext, t.tls_required), (false, false));
        let t = parse(
            "postgres://u@localhost/p?sslmode=require&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!((t.tls_required, t.verify), (true, Verify::Chain));
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.root_cert, Some(PathBuf::from("/ca.pem")));
        let e = parse("postgres://u@h/p?sslmode=verify-fulll").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
    }
}
