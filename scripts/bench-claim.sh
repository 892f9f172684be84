#!/bin/sh
# Claim throughput of the PostgreSQL queue (jobs/s) with N workers (default 8)
# over M jobs (default 4000), against a throwaway PostgreSQL started by the bench.
# Needs initdb/pg_ctl (PostgreSQL server binaries); run as root or as a user that may run them.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
exec cargo bench --bench claim_throughput -- "${1:-8}" "${2:-4000}"
