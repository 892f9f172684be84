//! Infra facts from `terraform output -json` samples of each cloud.

use std::collections::BTreeMap;

use tendril::cloud::Provider;
use tendril::facts::{FactsError, InfraFacts, OutputMapping};

fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/fixtures/outputs/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn facts(p: Provider, outputs: &serde_json::Value) -> Result<InfraFacts, FactsError> {
    InfraFacts::from_outputs(p, outputs, &OutputMapping::defaults(p))
}

#[test]
fn aws_outputs() {
    let f = facts(Provider::Aws, &fixture("aws")).unwrap();
    let c = &f.cluster;
    assert_eq!(c.provider, Provider::Aws);
    assert_eq!(c.name, "shop-prod");
    assert_eq!(
        c.endpoint.as_ref().unwrap().as_str(),
        "https://9F2E4B1C0A7D.gr7.eu-west-1.eks.amazonaws.com"
    );
    assert_eq!(
        c.id.as_deref(),
        Some("arn:aws:eks:eu-west-1:123456789012:cluster/shop-prod")
    );
    assert!(
        c.ca.as_ref()
            .unwrap()
            .pem()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        c.sources["cluster_ca"],
        "eks_cluster_certificate_authority_data"
    );
    assert_eq!(f.network.unwrap().id, "vpc-0a1b2c3d4e5f67890");
    assert_eq!(f.databases.len(), 1);
    let db = &f.databases[0];
    assert_eq!(db.name, "orders");
    assert_eq!(
        db.writer_endpoint,
        "shop-prod-orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com"
    );
    assert_eq!(
        db.reader_endpoint.as_deref(),
        Some("shop-prod-orders.cluster-ro-c9xyz.eu-west-1.rds.amazonaws.com")
    );
    assert!(
        db.credentials_secret
            .as_deref()
            .unwrap()
            .starts_with("arn:aws:secretsmanager:")
    );
    assert_eq!(
        f.caches[0].primary_endpoint,
        "master.shop-prod-sessions.abcd12.euw1.cache.amazonaws.com"
    );
    assert_eq!(
        f.caches[0].reader_endpoint.as_deref(),
        Some("replica.shop-prod-sessions.abcd12.euw1.cache.amazonaws.com")
    );
    let dns = f.dns.unwrap();
    assert_eq!(dns.zone.as_deref(), Some("Z0123456789ABCDEFGHIJ"));
    assert_eq!(dns.domain.as_deref(), Some("shop.example.com"));
    // Debug of the CA is short and never the whole PEM
    assert_eq!(
        format!("{:?}", c.ca.as_ref().unwrap()),
        "CaBundle(1 certificate(s))"
    );
}

#[test]
fn gcp_outputs() {
    let f = facts(Provider::Gcp, &fixture("gcp")).unwrap();
    // GKE gives a bare IP: the endpoint gets https://
    assert_eq!(
        f.cluster.endpoint.as_ref().unwrap().as_str(),
        "https://34.78.12.200"
    );
    assert_eq!(f.cluster.region.as_deref(), Some("europe-west1"));
    assert!(f.cluster.id.as_deref().unwrap().starts_with("projects/"));
    assert_eq!(f.databases[0].name, "orders");
    assert_eq!(
        f.databases[0].reader_endpoint, None,
        "a null output counts as absent"
    );
    assert_eq!(f.caches[0].reader_endpoint.as_deref(), Some("10.20.1.5"));
}

#[test]
fn azure_outputs_with_maps_of_databases() {
    let f = facts(Provider::Azure, &fixture("azure")).unwrap();
    assert_eq!(
        f.cluster.endpoint.as_ref().unwrap().as_str(),
        "https://shop-prod-dns-4f1c2a.hcp.westeurope.azmk8s.io:443"
    );
    assert_eq!(f.cluster.region.as_deref(), Some("westeurope"));
    let names: Vec<&str> = f.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["billing", "orders"]);
    let orders = f.databases.iter().find(|d| d.name == "orders").unwrap();
    assert_eq!(
        orders.reader_endpoint.as_deref(),
        Some("shop-prod-orders-replica.postgres.database.azure.com")
    );
    assert_eq!(
        orders.credentials_secret.as_deref(),
        Some("orders-db-credentials")
    );
    let billing = f.databases.iter().find(|d| d.name == "billing").unwrap();
    assert_eq!(billing.reader_endpoint, None);
    assert!(f.network.unwrap().id.contains("virtualNetworks"));
}

#[test]
fn missing_required_output_names_output_and_key() {
    let mut o = fixture("aws");
    o.as_object_mut().unwrap().remove("eks_cluster_name");
    let err = facts(Provider::Aws, &o).unwrap_err().to_string();
    assert!(
        err.contains("`eks_cluster_name`") && err.contains("`cluster_name`"),
        "{err}"
    );
    // GCP and Azure need endpoint and CA (there is no describe fallback)
    let mut o = fixture("gcp");
    o.as_object_mut()
        .unwrap()
        .remove("gke_cluster_ca_certificate");
    let err = facts(Provider::Gcp, &o).unwrap_err().to_string();
    assert!(
        err.contains("`gke_cluster_ca_certificate`") && err.contains("`cluster_ca`"),
        "{err}"
    );
    // AWS may leave endpoint and CA out
    let mut o = fixture("aws");
    o.as_object_mut().unwrap().remove("eks_cluster_endpoint");
    o.as_object_mut()
        .unwrap()
        .remove("eks_cluster_certificate_authority_data");
    let f = facts(Provider::Aws, &o).unwrap();
    assert!(f.cluster.endpoint.is_none() && f.cluster.ca.is_none());
}

#[test]
fn overrides_rename_outputs() {
    let mut o = fixture("aws");
    let v = o
        .as_object_mut()
        .unwrap()
        .remove("eks_cluster_name")
        .unwrap();
    o.as_object_mut().unwrap().insert("cluster_id".into(), v);
    let mut overrides = BTreeMap::new();
    overrides.insert("cluster_name".to_string(), "cluster_id".to_string());
    let mapping = OutputMapping::with_overrides(Provider::Aws, &overrides).unwrap();
    let f = InfraFacts::from_outputs(Provider::Aws, &o, &mapping).unwrap();
    assert_eq!(f.cluster.name, "shop-prod");
    assert_eq!(f.cluster.sources["cluster_name"], "cluster_id");
}

#[test]
fn bad_values_name_the_output() {
    let mut o = fixture("aws");
    o["eks_cluster_certificate_authority_data"]["value"] = "bm90IGEgY2VydA==".into();
    let err = facts(Provider::Aws, &o).unwrap_err().to_string();
    assert!(
        err.contains("`eks_cluster_certificate_authority_data`") && err.contains("CERTIFICATE"),
        "{err}"
    );
    let mut o = fixture("aws");
    o["eks_cluster_endpoint"]["value"] = "http://10.0.0.1".into();
    let err = facts(Provider::Aws, &o).unwrap_err().to_string();
    assert!(
        err.contains("`eks_cluster_endpoint`") && err.contains("https"),
        "{err}"
    );
    let mut o = fixture("aws");
    o["eks_cluster_name"]["value"] = serde_json::json!({"a": 1});
    let err = facts(Provider::Aws, &o).unwrap_err().to_string();
    assert!(
        err.contains("`eks_cluster_name`") && err.contains("an object"),
        "{err}"
    );
    let err = facts(Provider::Aws, &serde_json::json!([1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("terraform output -json"), "{err}");
}

#[test]
fn provider_detection_and_round_trip() {
    assert_eq!(
        InfraFacts::detect_provider(&fixture("aws")),
        Some(Provider::Aws)
    );
    assert_eq!(
        InfraFacts::detect_provider(&fixture("gcp")),
        Some(Provider::Gcp)
    );
    assert_eq!(
        InfraFacts::detect_provider(&fixture("azure")),
        Some(Provider::Azure)
    );
    assert_eq!(InfraFacts::detect_provider(&serde_json::json!({})), None);
    assert!("oracle".parse::<Provider>().is_err());
    // facts serialize and read back unchanged (the facts file format)
    let f = facts(Provider::Azure, &fixture("azure")).unwrap();
    let json = serde_json::to_string(&f).unwrap();
    let back: InfraFacts = serde_json::from_str(&json).unwrap();
    assert_eq!(back, f);
}
