#!/usr/bin/env bash
# Whole-process timing of `tendril render > /dev/null` (embedded Argo CD chart,
# default values) with the shipped (`dist` profile) binary: the median of N runs, and the peak
# resident memory reported by GNU time (`/usr/bin/time -v`).
#
# Usage: scripts/bench-render.sh [RUNS] [-- extra render flags]
#   RUNS defaults to 50. Builds the dist binary first unless
#   TENDRIL_BIN names one. Uses hyperfine too when it is installed.
#   With TENDRIL_BIN_BASE naming another build (e.g. of the previous commit),
#   the two binaries run alternately, run for run, and both medians are
#   printed: on a shared machine only such an interleaved run compares them.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-50}
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")

if [ -z "${TENDRIL_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --profile dist --bin tendril >&2
  TENDRIL_BIN=$CARGO_TARGET_DIR/dist/tendril
fi
if [ ! -x /usr/bin/time ]; then
  echo "GNU time is missing: apt-get install -y time" >&2
  exit 1
fi

cmd=("$TENDRIL_BIN" render --redis-password bench-password "${extra[@]}")

# Warm-up (page cache), and a check that the render works at all.
"${cmd[@]}" > /dev/null

median_of() {
  sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'
}
ms() { printf '%d.%03d ms' $(($1 / 1000)) $(($1 % 1000)); }

if [ -n "${TENDRIL_BIN_BASE:-}" ]; then
  base=("$TENDRIL_BIN_BASE" "${cmd[@]:1}")
  "${base[@]}" > /dev/null
  t_new=(); t_base=()
  for _ in $(seq "$runs"); do
    start=${EPOCHREALTIME/./}; "${base[@]}" > /dev/null; end=${EPOCHREALTIME/./}
    t_base+=($(( end - start )))
    start=${EPOCHREALTIME/./}; "${cmd[@]}" > /dev/null; end=${EPOCHREALTIME/./}
    t_new+=($(( end - start )))
  done
  rss() { { /usr/bin/time -v "$@" > /dev/null; } 2>&1 | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}'; }
  printf 'interleaved:   %s runs each\n' "$runs"
  printf 'base median:   %s, peak RSS %s KiB (%s)\n' "$(ms "$(printf '%s\n' "${t_base[@]}" | median_of)")" "$(rss "${base[@]}")" "$TENDRIL_BIN_BASE"
  printf 'this median:   %s, peak RSS %s KiB (%s)\n' "$(ms "$(printf '%s\n' "${t_new[@]}" | median_of)")" "$(rss "${cmd[@]}")" "$TENDRIL_BIN"
  exit 0
fi

times=()
for _ in $(seq "$runs"); do
  # $EPOCHREALTIME is a bash builtin: no `date` process inside the measurement.
  start=${EPOCHREALTIME/./}
  "${cmd[@]}" > /dev/null
  end=${EPOCHREALTIME/./}
  times+=($(( end - start )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median_us=$(printf '%s\n' "$sorted" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}')
min_us=$(printf '%s\n' "$sorted" | head -1)
max_us=$(printf '%s\n' "$sorted" | tail -1)

rss_kb=$( { /usr/bin/time -v "${cmd[@]}" > /dev/null; } 2>&1 | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
objects=$("${cmd[@]}" | grep -c '^kind:' || true)

printf 'binary:        %s (%s bytes)\n' "$TENDRIL_BIN" "$(stat -c %s "$TENDRIL_BIN")"
printf 'objects:       %s\n' "$objects"
printf 'runs:          %s\n' "$runs"
printf 'median:        %d.%03d ms\n' $((median_us / 1000)) $((median_us % 1000))
printf 'min / max:     %d.%03d ms / %d.%03d ms\n' $((min_us / 1000)) $((min_us % 1000)) $((max_us / 1000)) $((max_us % 1000))
printf 'peak RSS:      %s KiB\n' "$rss_kb"

# CPU time (both threads) and page faults: steadier than wall time on a shared
# machine. `perf stat` needs Debian's linux-perf; skipped without it.
if command -v perf > /dev/null; then
  perf stat -r "$runs" -e task-clock,page-faults "${cmd[@]}" 2>&1 > /dev/null \
    | awk '/task-clock|page-faults|elapsed/ {print "perf stat:     " $0}' | sed 's/  */ /g'
fi

if command -v hyperfine > /dev/null; then
  hyperfine --warmup 5 --runs "$runs" --shell=none --output=null "${cmd[*]}"
fi
