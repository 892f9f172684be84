#!/usr/bin/env bash
# Measures `tendril token eks` as a whole process: median wall time over N runs
# and peak RSS (/usr/bin/time -v), next to `aws eks get-token` when the aws CLI
# is installed. Static credentials come from the environment (the fast path),
# so nothing touches the network.
#
#   scripts/bench-token.sh [RUNS]        (default 200 runs; aws CLI: 20 runs)
#
# Env: TENDRIL (binary; default target/dist/tendril, built if missing).
set -euo pipefail

runs="${1:-200}"
aws_runs="${AWS_RUNS:-20}"
cd "$(dirname "$0")/.."
root="$PWD"
bin="${TENDRIL:-$root/target/dist/tendril}"
if [[ ! -x "$bin" ]]; then
    echo "building $bin ..." >&2
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo build --profile dist --bin tendril >&2
fi
if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time for peak RSS ..." >&2
    apt-get install -y -qq time >/dev/null
fi

export AWS_ACCESS_KEY_ID=AKIDEXAMPLE
export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
export AWS_REGION=eu-west-1
export AWS_EC2_METADATA_DISABLED=true
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export HOME="$tmp" AWS_CONFIG_FILE="$tmp/none" AWS_SHARED_CREDENTIALS_FILE="$tmp/none"

# median wall time in milliseconds of "$@" over $n runs
median_ms() {
    local n="$1"; shift
    python3 - "$n" "$@" <<'EOF'
import subprocess, sys, time, statistics
n = int(sys.argv[1]); cmd = sys.argv[2:]
samples = []
for _ in range(n):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    samples.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(samples):.2f}")
EOF
}

# user+system CPU milliseconds per run of "$@" (less sensitive to machine load than wall time)
cpu_ms() {
    local n="$1"; shift
    python3 - "$n" "$@" <<'EOF'
import resource, subprocess, sys
n = int(sys.argv[1]); cmd = sys.argv[2:]
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(n):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / n * 1000:.2f}")
EOF
}

peak_kb() {
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}'
}

base_ms="$(median_ms "$runs" /bin/true)"
printf 'spawn baseline    : median %8s ms (/bin/true, the cost of starting any process from the harness)\n' "$base_ms"

cmd=("$bin" token eks --cluster shop-prod)
"${cmd[@]}" | python3 -c 'import json,sys; v=json.load(sys.stdin); assert v["status"]["token"].startswith("k8s-aws-v1.")'
t_ms="$(median_ms "$runs" "${cmd[@]}")"
t_kb="$(peak_kb "${cmd[@]}")"
t_cpu="$(cpu_ms "$runs" "${cmd[@]}")"
printf 'tendril token eks : median %8s ms over %d runs, peak RSS %6.1f MB, CPU %s ms/run (/bin/true: %s)\n' \
    "$t_ms" "$runs" "$(awk "BEGIN{print $t_kb/1024}")" "$t_cpu" "$(cpu_ms "$runs" /bin/true)"

if command -v aws >/dev/null 2>&1; then
    acmd=(aws eks get-token --cluster-name shop-prod --region eu-west-1)
    a_ms="$(median_ms "$aws_runs" "${acmd[@]}")"
    a_kb="$(peak_kb "${acmd[@]}")"
    printf 'aws eks get-token : median %8s ms over %d runs, peak RSS %6.1f MB\n' "$a_ms" "$aws_runs" "$(awk "BEGIN{print $a_kb/1024}")"
    printf 'speed-up          : %.0fx\n' "$(awk "BEGIN{print $a_ms/$t_ms}")"
fi
