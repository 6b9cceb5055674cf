#!/usr/bin/env bash
# Load benchmark: starts the appliance (release build, durable store, a fresh data folder
# each time) on a free port with the example bundles, drives it with wrk at 32 connections
# with car-price requests, and prints requests/s and the latency percentiles.
#
# It measures the cost of authentication in the same invocation: rounds alternate between an
# appliance with no token (anonymous on loopback) and one whose requests carry a kiosk token
# (`Authorization: Bearer`, checked on each request), so the machine's noise falls on both.
#
#   bench/load.sh                 # 2 rounds of 20 s runs, each after a 5 s warm-up
#   DURATION=60 ROUNDS=3 THREADS=2 bench/load.sh
#   LOG_LEVEL=info bench/load.sh  # with the access log (one line per request); default warn
#   BASELINE=/tmp/forecourt-old bench/load.sh
#                                 # instead of the token comparison: this checkout's binary
#                                 # against another build of forecourt, alternating, anonymous
#   COMPARE=drift bench/load.sh   # instead: the drift window on (the default) against off
#                                 # ([quality] drift = false), alternating, anonymous
#   COMPARE_ENV="FORECOURT_STORE__CACHE_CAPACITY_MIB=64 MIMALLOC_PURGE_DELAY=1000" bench/load.sh
#                                 # instead: the defaults against the same build with these
#                                 # variables set (any setting or allocator option), alternating
#
# Needs the bundles (make bundles); installs wrk from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
LOG_LEVEL=${LOG_LEVEL:-warn}
BUNDLES=${BUNDLES:-bundles}

# shellcheck source=bench/common.sh
source bench/common.sh

# run LABEL TOKEN [BINARY]: one appliance, warm-up, measured run; appends "LABEL req/s p50 p99
# non2xx cpu-us-per-request switches-per-request RSS stored" to the results.
run() {
  local label=$1 token=$2 program=${3:-$binary} data
  data=$(mktemp -d -p "$scratch")
  local auth=()
  if [ -n "$token" ]; then
    # Tokens are made before the start, as an operator would: the appliance requires them from its first request.
    FORECOURT_DATA_DIR="$data" "$binary" token add --role admin --name bench-admin >"$data/admin.token" 2>/dev/null
    FORECOURT_DATA_DIR="$data" "$binary" token add --role kiosk --name bench-kiosk >"$data/kiosk.token" 2>/dev/null
    auth=(-H "Authorization: Bearer $(cat "$data/kiosk.token")")
  fi
  start_server "$data" "$program"
  local url="$address/v1/predict/car-price"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${auth[@]}" -s bench/car-price.lua "$url" >/dev/null
  local result ticks switches
  ticks=$(cpu_ticks) switches=$(context_switches)
  result=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${auth[@]}" -s bench/car-price.lua "$url")
  ticks=$(($(cpu_ticks) - ticks)) switches=$(($(context_switches) - switches))
  echo "----- $label -----"
  echo "$result"
  local admin_header=()
  [ -n "$token" ] && admin_header=(-H "Authorization: Bearer $(cat "$data/admin.token")")
  rss=$(curl -s "${admin_header[@]}" "$address/metrics" | awk '/^process_resident_memory_bytes/ {printf "%.0f", $2/1048576}')
  stored=$(curl -s "${admin_header[@]}" "$address/health/detailed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["stats"]["predictions"])')
  echo "$(echo "$result" | wrk_summary "$label" "$ticks" "$switches") $rss $stored" >>"$scratch/results"
  stop_server
}

: >"$scratch/results"
# The two sides of the comparison; each goes first every other round, so that a machine
# warming up (or a neighbour taking the CPU) favours neither.
if [ "${COMPARE:-}" = drift ]; then
  first=drift-on second=drift-off
  run_first() { run "$first" ""; }
  run_second() { FORECOURT_QUALITY__DRIFT=false run "$second" ""; }
elif [ -n "${COMPARE_ENV:-}" ]; then
  first=defaults second=with-env
  read -ra compare_env <<<"$COMPARE_ENV"
  run_first() { run "$first" ""; }
  # A subshell, so that the variables end with the run (it writes its result to a file).
  run_second() { (export "${compare_env[@]}"; run "$second" ""); }
elif [ -n "${BASELINE:-}" ]; then
  first=this-build second=baseline
  run_first() { run "$first" ""; }
  run_second() { run "$second" "" "$BASELINE"; }
else
  first=anonymous second=kiosk-token
  run_first() { run "$first" ""; }
  run_second() { run "$second" "yes"; }
fi
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run_first; run_second; else run_second; run_first; fi
done

echo
echo "summary: car-price, $CONNECTIONS connections, ${DURATION}s runs, $ROUNDS rounds, store durability ${FORECOURT_STORE__DURABILITY:-durable}"
printf '  %-12s %10s %9s %9s %8s %8s %10s %12s %12s\n' run requests/s p50 p99 non-2xx "RSS MiB" stored "CPU us/req" "switches/req"
while read -r label rps p50 p99 bad cpu switches rss stored; do
  printf '  %-12s %10s %9s %9s %8s %8s %10s %12s %12s\n' "$label" "$rps" "$p50" "$p99" "$bad" "$rss" "$stored" "$cpu" "$switches"
done <"$scratch/results"
# CPU time per request is the appliance's own (user + system, from /proc): a virtual
# machine's steal time, which moves requests/s by tens of percent here, is not in it.
awk -v first="$first" -v second="$second" '{sum[$1]+=$2; cpu[$1]+=$6; cs[$1]+=$7; n[$1]++} END {
  a=sum[first]/n[first]; k=sum[second]/n[second]; ca=cpu[first]/n[first]; ck=cpu[second]/n[second];
  sa=cs[first]/n[first]; sk=cs[second]/n[second];
  printf "  mean requests/s: %s %.0f, %s %.0f (%+.1f%%)\n", first, a, second, k, (k-a)/a*100;
  printf "  mean CPU per request: %s %.1f us, %s %.1f us (%+.1f%%)\n", first, ca, second, ck, (ck-ca)/ca*100;
  printf "  mean context switches per request: %s %.2f, %s %.2f\n", first, sa, second, sk }' "$scratch/results"
