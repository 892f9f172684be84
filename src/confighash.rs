//! Canonical config hashing and the stale-plan check.
