#!/usr/bin/env bash
# Measures `tendril apply` of what the Argo CD install applies (the embedded
# chart's default render plus its Namespace): first apply and unchanged
# re-apply, each with wall time, peak RSS and API requests; beside
# `kubectl apply --server-side` when kubectl is on PATH (interleaved runs,
# each on a fresh state, and the ratio); on the in-repo test API server also
# how soon after the last Deployment turned ready the wait returned.
#
# Usage: scripts/bench-apply.sh
#   TENDRIL_E2E_KUBECONFIG  measure against that cluster (default: a test API
#                           server started in the bench process, fresh per run)
#   TENDRIL_BENCH_CLEAN=1   on that cluster, allow deleting Argo CD objects the
#                           bench did not create (it recreates them every run)
#   TENDRIL_BENCH_RUNS      runs (default 5; the medians are printed)
#   TENDRIL_BENCH_KUBECTL   kubectl to compare with (default: kubectl on PATH;
#                           `none` to skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
if [ "${TENDRIL_BENCH_KUBECTL:-}" = none ]; then
  echo "TENDRIL_BENCH_KUBECTL=none: measuring tendril alone, no side-by-side ratio"
elif ! command -v "${TENDRIL_BENCH_KUBECTL:-kubectl}" >/dev/null; then
  echo "kubectl is not on PATH: measuring tendril alone, no side-by-side ratio"
fi
cargo build --release --bin tendril
export TENDRIL_BIN="$CARGO_TARGET_DIR/release/tendril"
cargo bench --bench apply
