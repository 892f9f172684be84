//! Assuming credentials per provider (AWS STS, GCP WIF, Azure federated).
