#!/usr/bin/env bash
# Measures `tendril apply` of a manifest bundle: process wall time, peak
# memory, re-apply time, and (on the in-repo test API server) how long after
# the last object became ready `tendril apply --wait` noticed and exited.
#
# Usage: scripts/bench-apply.sh [BUNDLE]
#   BUNDLE                  default: the reference Argo CD rendering
#                           (../shared/reference/argo-cd/rendered/default.yaml),
#                           read at run time and never committed
#   TENDRIL_E2E_KUBECONFIG  measure against that cluster instead of the test server
#   TENDRIL_BENCH_RUNS      repetitions (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ $# -gt 0 ]; then export TENDRIL_BENCH_BUNDLE="$1"; fi
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
cargo build --profile dist --bin tendril
export TENDRIL_BIN="$CARGO_TARGET_DIR/dist/tendril"
cargo bench --bench apply
