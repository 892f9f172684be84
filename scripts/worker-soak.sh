#!/bin/sh
# 8 `tendril worker` processes over 100 real PLAN and DEPLOY jobs (25 vines,
# real terraform, state in moto's S3, a throwaway PostgreSQL), one worker
# SIGKILLed mid-DEPLOY: checks exactly-once, no overlap within a vine, no
# orphan process or file, and consistent states (tests/worker_soak.rs).
# Needs terraform, python3 with moto, and the PostgreSQL server binaries.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# the workers run a copy of the binary: a rebuild meanwhile does not touch it
cargo build --bin tendril
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
cp "$CARGO_TARGET_DIR/debug/tendril" "$copy/tendril"
TENDRIL_SOAK_BIN="$copy/tendril" cargo test --test worker_soak -- --ignored --nocapture
