//! Typed infrastructure facts from Terraform outputs.
//!
//! [`InfraFacts::from_outputs`] reads the document `terraform output -json`
//! prints (`{"name": {"sensitive": bool, "type": ..., "value": ...}}`) through
//! an [`OutputMapping`] (fact key → output name). Each cloud has default
//! names ([`OutputMapping::defaults`], from the provider's
//! [`OutputDefaults`](crate::cloud::OutputDefaults)) that match common module
//! outputs; a job overrides any of them. A missing required output is an
//! error naming both the output and the mapping key, so the fix is obvious.
//!
//! This module calls nothing else in tendril; it uses the type
//! [`Provider`] of `cloud` (a cluster's provider, never `local`) and its
//! output defaults.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cloud::Provider;

/// What went wrong while reading facts.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// A required output is absent.
    #[error(
        "Terraform output `{output}` (mapping key `{key}`) is missing; add the output to the \
         configuration or map `{key}` to another output in the job's `tendril.outputs`"
    )]
    MissingOutput {
        /// The fact key.
        key: String,
        /// The output name it maps to.
        output: String,
    },
    /// An output has the wrong shape or an unusable value.
    #[error("Terraform output `{output}` (mapping key `{key}`) is invalid: {reason}")]
    InvalidOutput {
        /// The fact key.
        key: String,
        /// The output name.
        output: String,
        /// What is wrong.
        reason: String,
    },
    /// The outputs document is not `terraform output -json`'s shape.
    #[error(
        "the Terraform outputs document is malformed: {0}; expected the JSON of `terraform output -json`"
    )]
    Malformed(String),
    /// The mapping names an unknown fact key.
    #[error("unknown output mapping key `{0}`; known keys: {known}", known = FACT_KEYS.join(", "))]
    UnknownKey(String),
}

/// Every fact key a mapping may name.
pub const FACT_KEYS: &[&str] = &[
    keys::CLUSTER_NAME,
    keys::CLUSTER_ENDPOINT,
    keys::CLUSTER_ID,
    keys::CLUSTER_CA,
    keys::REGION,
    keys::NETWORK_ID,
    keys::DATABASE_NAME,
    keys::DATABASE_WRITER_ENDPOINT,
    keys::DATABASE_READER_ENDPOINT,
    keys::DATABASE_SECRET,
    keys::CACHE_PRIMARY_ENDPOINT,
    keys::CACHE_READER_ENDPOINT,
    keys::DNS_ZONE,
    keys::DNS_DOMAIN,
];

/// The fact keys of an [`OutputMapping`].
pub mod keys {
    /// The cluster's name (required).
    pub const CLUSTER_NAME: &str = "cluster_name";
    /// The API server URL.
    pub const CLUSTER_ENDPOINT: &str = "cluster_endpoint";
    /// The cluster ARN (AWS) or resource ID (GCP, Azure).
    pub const CLUSTER_ID: &str = "cluster_id";
    /// The cluster CA bundle (PEM or base64 of PEM).
    pub const CLUSTER_CA: &str = "cluster_ca";
    /// The region (or GCP location) the cluster runs in.
    pub const REGION: &str = "region";
    /// The VPC / VNet ID.
    pub const NETWORK_ID: &str = "network_id";
    /// The database name (a string, or absent).
    pub const DATABASE_NAME: &str = "database_name";
    /// The database writer endpoint (a string, or a map name → endpoint).
    pub const DATABASE_WRITER_ENDPOINT: &str = "database_writer_endpoint";
    /// The database reader endpoint (same shape as the writer).
    pub const DATABASE_READER_ENDPOINT: &str = "database_reader_endpoint";
    /// The ARN or name of the secret holding the database credentials.
    pub const DATABASE_SECRET: &str = "database_secret";
    /// The cache primary endpoint (a string, or a map name → endpoint).
    pub const CACHE_PRIMARY_ENDPOINT: &str = "cache_primary_endpoint";
    /// The cache reader endpoint.
    pub const CACHE_READER_ENDPOINT: &str = "cache_reader_endpoint";
    /// The DNS zone ID or name.
    pub const DNS_ZONE: &str = "dns_zone";
    /// The DNS domain.
    pub const DNS_DOMAIN: &str = "dns_domain";
}

/// Fact key → Terraform output name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMapping(BTreeMap<String, String>);

impl OutputMapping {
    /// The default output names for a cloud (see `docs/credentials.md`).
    pub fn defaults(provider: Provider) -> Self {
        use keys::*;
        let d = provider.outputs();
        let pairs = [
            (CLUSTER_NAME, d.cluster_name),
            (CLUSTER_ENDPOINT, d.cluster_endpoint),
            (CLUSTER_ID, d.cluster_id),
            (CLUSTER_CA, d.cluster_ca),
            (REGION, d.region),
            (NETWORK_ID, d.network_id),
            (DATABASE_NAME, d.database_name),
            (DATABASE_WRITER_ENDPOINT, d.database_writer_endpoint),
            (DATABASE_READER_ENDPOINT, d.database_reader_endpoint),
            (DATABASE_SECRET, d.database_secret),
            (CACHE_PRIMARY_ENDPOINT, d.cache_primary_endpoint),
            (CACHE_READER_ENDPOINT, d.cache_reader_endpoint),
            (DNS_ZONE, d.dns_zone),
            (DNS_DOMAIN, d.dns_domain),
        ];
        OutputMapping(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The defaults for `provider` with `overrides` (fact key → output name) on top.
    pub fn with_overrides(
        provider: Provider,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, FactsError> {
        let mut m = Self::defaults(provider);
        for (key, output) in overrides {
            if !FACT_KEYS.contains(&key.as_str()) {
                return Err(FactsError::UnknownKey(key.clone()));
            }
            m.0.insert(key.clone(), output.clone());
        }
        Ok(m)
    }

    /// The output name a fact key maps to.
    pub fn output<'a>(&'a self, key: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(key)
    }
}

/// An `https://` API server or service URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Endpoint(String);

/// Why [`Endpoint::parse_api_server`] refused an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The address is empty.
    #[error("the API server endpoint is empty; give its https:// URL or its host")]
    Empty,
    /// The address has a scheme other than `https://`.
    #[error(
        "`{0}` is not an https URL; the API server must be reached over TLS: give its https:// URL"
    )]
    NotHttps(String),
    /// The address has no usable host.
    #[error("`{0}` has no valid host; give the API server's https:// URL, e.g. https://10.0.0.1")]
    NoHost(String),
}

/// Why [`CaBundle::parse`] refused a CA bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaBundleError {
    /// The text is neither PEM nor base64.
    #[error(
        "neither PEM nor base64 of PEM ({0}); give the cluster's CA certificate as PEM text or base64 of it"
    )]
    NotBase64(base64::DecodeError),
    /// The base64 decodes to bytes that are not text.
    #[error(
        "base64 does not decode to PEM text; give the cluster's CA certificate as PEM text or base64 of it"
    )]
    NotText,
    /// No `CERTIFICATE` block.
    #[error(
        "no PEM CERTIFICATE block found; give the cluster's CA certificate (-----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate,
    /// A block is not valid PEM.
    #[error("certificate {index} is not valid PEM ({reason}); give the cluster's CA certificate")]
    BadPem {
        /// Which block, from 1.
        index: usize,
        /// What the PEM reader said.
        reason: String,
    },
    /// A block is PEM but not an X.509 certificate.
    #[error(
        "certificate {index} is not a valid X.509 certificate (its DER encoding does not parse); give the cluster's CA certificate"
    )]
    NotX509 {
        /// Which block, from 1.
        index: usize,
    },
}

impl Endpoint {
    /// Parses an API server address; a bare host or IP (as GKE outputs it) gets `https://`.
    pub fn parse_api_server(text: &str) -> Result<Self, EndpointError> {
        let text = text.trim().trim_end_matches('/');
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        let url = if text.contains("://") {
            text.to_string()
        } else {
            format!("https://{text}")
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| EndpointError::NotHttps(text.to_string()))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
            return Err(EndpointError::NoHost(text.to_string()));
        }
        Ok(Endpoint(url))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that every PEM CERTIFICATE block in `pem` is an X.509 certificate
/// usable as a trust anchor.
fn check_certificates(pem: &str) -> Result<(), CaBundleError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut n = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let index = i + 1;
        let cert = cert.map_err(|e| CaBundleError::BadPem {
            index,
            reason: e.to_string(),
        })?;
        webpki::anchor_from_trusted_cert(&cert).map_err(|_| CaBundleError::NotX509 { index })?;
        n += 1;
    }
    if n == 0 {
        return Err(CaBundleError::NoCertificate);
    }
    Ok(())
}

/// A PEM bundle of one or more CA certificates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaBundle(String);

impl CaBundle {
    /// Accepts PEM text or base64 of PEM (as EKS, GKE and AKS outputs carry it).
    pub fn parse(text: &str) -> Result<Self, CaBundleError> {
        let text = text.trim();
        let pem = if text.starts_with("-----BEGIN") {
            text.to_string()
        } else {
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(CaBundleError::NotBase64)?;
            String::from_utf8(bytes).map_err(|_| CaBundleError::NotText)?
        };
        if !pem.contains("-----BEGIN CERTIFICATE-----")
            || !pem.contains("-----END CERTIFICATE-----")
        {
            return Err(CaBundleError::NoCertificate);
        }
        check_certificates(&pem)?;
        Ok(CaBundle(format!("{}\n", pem.trim())))
    }

    /// The PEM text.
    pub fn pem(&self) -> &str {
        &self.0
    }

    /// Base64 of the PEM text (kubeconfig `certificate-authority-data`).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
    }
}

impl TryFrom<String> for CaBundle {
    type Error = CaBundleError;
    fn try_from(s: String) -> Result<Self, CaBundleError> {
        CaBundle::parse(&s)
    }
}

impl From<CaBundle> for String {
    fn from(c: CaBundle) -> String {
        c.0
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.matches("-----BEGIN CERTIFICATE-----").count();
        write!(f, "CaBundle({n} certificate(s))")
    }
}

/// The Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The cloud.
    pub provider: Provider,
    /// The cluster name.
    pub name: String,
    /// The API server URL (AWS may leave it to DescribeCluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// ARN (AWS) or resource ID (GCP, Azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The CA bundle the API server's certificate chains to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaBundle>,
    /// Region or location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Which output each fact came from (fact key → output name), for error messages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
}

impl ClusterFacts {
    /// The output a cluster fact came from, or a description when it did not come from an output.
    pub fn source_of(&self, key: &str) -> String {
        match self.sources.get(key) {
            Some(origin) if origin.starts_with('(') => format!("{key} {origin}"),
            Some(output) => format!("Terraform output `{output}` (mapping key `{key}`)"),
            None => format!("cluster fact `{key}`"),
        }
    }

    /// The AWS region: the `region` fact, else the one in the cluster ARN.
    pub fn aws_region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            let id = self.id.as_deref()?;
            let region = id.strip_prefix("arn:")?.split(':').nth(2)?;
            (!region.is_empty()).then(|| region.to_string())
        })
    }
}

/// The network the cluster lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFacts {
    /// VPC (AWS, GCP) or VNet (Azure) ID.
    pub id: String,
}

/// A managed database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFacts {
    /// The database (or instance) name.
    pub name: String,
    /// Writer endpoint.
    pub writer_endpoint: String,
    /// Reader endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_endpoint: Option<String>,
    /// ARN (AWS Secrets Manager) or name of the secret with the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// A managed cache (Redis / Valkey).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFacts {
    /// The cache name.
    pub name: String,
    /// Primary endpoint.
    pub primary_endpoint: String,
    /// Reader endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_endpoint: Option<String>,
}

/// DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsFacts {
    /// Zone ID or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Everything tendril knows about the infrastructure Terraform made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfraFacts {
    /// The cluster.
    pub cluster: ClusterFacts,
    /// The network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkFacts>,
    /// Databases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseFacts>,
    /// Caches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<CacheFacts>,
    /// DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFacts>,
}

struct Outputs<'a> {
    values: &'a serde_json::Map<String, Value>,
    mapping: &'a OutputMapping,
}

impl Outputs<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> FactsError {
        FactsError::InvalidOutput {
            key: key.into(),
            output: self.mapping.output(key).into(),
            reason: reason.into(),
        }
    }

    /// The value of the output a key maps to; null counts as absent.
    fn value(&self, key: &str) -> Option<&Value> {
        let output = self.values.get(self.mapping.output(key))?;
        let v = match output.get("value") {
            Some(v) => v,
            None => output,
        };
        (!v.is_null()).then_some(v)
    }

    fn string(&self, key: &str) -> Result<Option<String>, FactsError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => scalar(v)
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected a string, found {}", kind(v)))),
        }
    }

    fn required(&self, key: &str) -> Result<String, FactsError> {
        match self.string(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.invalid(key, "the value is empty")),
            None => Err(FactsError::MissingOutput {
                key: key.into(),
                output: self.mapping.output(key).into(),
            }),
        }
    }

    /// A string (one unnamed item) or a map name → string (several named items).
    fn named(&self, key: &str) -> Result<Vec<(Option<String>, String)>, FactsError> {
        match self.value(key) {
            None => Ok(vec![]),
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(name, v)| {
                    scalar(v).map(|s| (Some(name.clone()), s)).ok_or_else(|| {
                        self.invalid(key, format!("entry `{name}` is {}, not a string", kind(v)))
                    })
                })
                .collect(),
            Some(v) => scalar(v).map(|s| vec![(None, s)]).ok_or_else(|| {
                self.invalid(
                    key,
                    format!("expected a string or a map of strings, found {}", kind(v)),
                )
            }),
        }
    }

    fn named_lookup(&self, key: &str, name: Option<&str>) -> Result<Option<String>, FactsError> {
        let items = self.named(key)?;
        Ok(match name {
            Some(n) => items
                .into_iter()
                .find(|(k, _)| k.as_deref() == Some(n))
                .map(|(_, v)| v),
            None => items.into_iter().find(|(k, _)| k.is_none()).map(|(_, v)| v),
        })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // a one-element list (e.g. `certificate_authority[*].data`)
        Value::Array(a) if a.len() == 1 => scalar(&a[0]),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl InfraFacts {
    /// Reads facts from `terraform output -json`. Only the cluster name is
    /// required; GCP and Azure also need the endpoint and CA (AWS can fetch
    /// them with DescribeCluster: [`OutputDefaults::endpoint_lookup`](crate::cloud::OutputDefaults::endpoint_lookup)).
    pub fn from_outputs(
        provider: Provider,
        outputs: &Value,
        mapping: &OutputMapping,
    ) -> Result<Self, FactsError> {
        use keys::*;
        let values = outputs.as_object().ok_or_else(|| {
            FactsError::Malformed(format!("the top level is {}, not an object", kind(outputs)))
        })?;
        let o = Outputs { values, mapping };
        let mut sources = BTreeMap::new();
        let mut note = |key: &str, present: bool| {
            if present {
                sources.insert(key.to_string(), mapping.output(key).to_string());
            }
        };

        let name = o.required(CLUSTER_NAME)?;
        note(CLUSTER_NAME, true);
        let lookup = provider.outputs().endpoint_lookup;
        let endpoint = if lookup {
            o.string(CLUSTER_ENDPOINT)?
        } else {
            Some(o.required(CLUSTER_ENDPOINT)?)
        };
        let endpoint = endpoint
            .map(|e| {
                Endpoint::parse_api_server(&e)
                    .map_err(|r| o.invalid(CLUSTER_ENDPOINT, r.to_string()))
            })
            .transpose()?;
        note(CLUSTER_ENDPOINT, endpoint.is_some());
        let ca = if lookup {
            o.string(CLUSTER_CA)?
        } else {
            Some(o.required(CLUSTER_CA)?)
        };
        let ca = ca
            .map(|c| CaBundle::parse(&c).map_err(|r| o.invalid(CLUSTER_CA, r.to_string())))
            .transpose()?;
        note(CLUSTER_CA, ca.is_some());
        let id = o.string(CLUSTER_ID)?;
        note(CLUSTER_ID, id.is_some());
        let region = o.string(REGION)?;
        note(REGION, region.is_some());

        let network = o.string(NETWORK_ID)?.map(|id| NetworkFacts { id });

        let db_name = o.string(DATABASE_NAME)?;
        let mut databases = Vec::new();
        for (name, writer) in o.named(DATABASE_WRITER_ENDPOINT)? {
            databases.push(DatabaseFacts {
                reader_endpoint: o.named_lookup(DATABASE_READER_ENDPOINT, name.as_deref())?,
                credentials_secret: o.named_lookup(DATABASE_SECRET, name.as_deref())?,
                name: name
                    .or_else(|| db_name.clone())
                    .unwrap_or_else(|| "default".into()),
                writer_endpoint: writer,
            });
        }
        let mut caches = Vec::new();
        for (name, primary) in o.named(CACHE_PRIMARY_ENDPOINT)? {
            caches.push(CacheFacts {
                reader_endpoint: o.named_lookup(CACHE_READER_ENDPOINT, name.as_deref())?,
                name: name.unwrap_or_else(|| "default".into()),
                primary_endpoint: primary,
            });
        }
        let zone = o.string(DNS_ZONE)?;
        let domain = o.string(DNS_DOMAIN)?;
        let dns = (zone.is_some() || domain.is_some()).then_some(DnsFacts { zone, domain });

        Ok(InfraFacts {
            cluster: ClusterFacts {
                provider,
                name,
                endpoint,
                id,
                ca,
                region,
                sources,
            },
            network,
            databases,
            caches,
            dns,
        })
    }

    /// Guesses the cloud from the default output names present (`eks_…`,
    /// `gke_…`, `aks_…`); `None` when none or several match.
    pub fn detect_provider(outputs: &Value) -> Option<Provider> {
        let map = outputs.as_object()?;
        let found: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| map.contains_key(p.outputs().cluster_name))
            .collect();
        (found.len() == 1).then(|| found[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse_api_server("34.1.2.3").unwrap().as_str(),
            "https://34.1.2.3"
        );
        assert_eq!(
            Endpoint::parse_api_server("https://X.gr7.eu-west-1.eks.amazonaws.com/")
                .unwrap()
                .as_str(),
            "https://X.gr7.eu-west-1.eks.amazonaws.com"
        );
        assert_eq!(
            Endpoint::parse_api_server("http://insecure:8080"),
            Err(EndpointError::NotHttps("http://insecure:8080".into()))
        );
        assert_eq!(Endpoint::parse_api_server(" "), Err(EndpointError::Empty));
        assert_eq!(
            Endpoint::parse_api_server("https://user@host"),
            Err(EndpointError::NoHost("https://user@host".into()))
        );
    }

    #[test]
    fn ca_bundles_say_what_is_wrong() {
        assert!(matches!(
            CaBundle::parse("not base64!"),
            Err(CaBundleError::NotBase64(_))
        ));
        assert_eq!(
            CaBundle::parse("-----BEGIN CERTIFICATE-----\nMIIBdemo\n-----END CERTIFICATE-----"),
            Err(CaBundleError::NotX509 { index: 1 })
        );
        assert_eq!(
            CaBundle::parse("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----"),
            Err(CaBundleError::NoCertificate)
        );
    }

    #[test]
    fn unknown_mapping_key() {
        let mut o = BTreeMap::new();
        o.insert("cluster_nmae".to_string(), "x".to_string());
        let err = OutputMapping::with_overrides(Provider::Aws, &o).unwrap_err();
        assert!(err.to_string().contains("cluster_nmae"));
    }
}
