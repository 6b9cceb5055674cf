#!/usr/bin/env bash
# `make load`: the request path at the machine's limit, every way a client asks, in one
# invocation on one machine, so that the figures can be compared with each other:
#
#   health       GET /health: the HTTP ceiling, no plugin, model or store
#   v1-durable   POST /v1/predict/car-price, durable store (acknowledged once on disk)
#   v1-relaxed   the same on an appliance with store.durability = "relaxed"
#   v2-json      POST /v2/models/car-price/infer, JSON tensors
#   v2-binary    the same in Triton's binary tensor framing (tritonclient's default)
#   grpc         ModelInfer over gRPC (runtime/examples/grpc_load.rs, one thread like wrk -t1)
#   batch-1000   POST /v1/predict/car-price/batch with 1,000 cars; rows/min beside it
#
# Each run gets a warm-up, then a measured run at 32 connections (batch: 4). It prints
# requests/s, p50, p99, each run's requests/s as a share of /health's, the appliance's own
# CPU time per request (user + system from /proc: steal time, which moves requests/s by tens
# of percent on a shared virtual machine, is not in it), the resident memory idle and after
# the load, the bytes on disk per stored prediction, the time a restart takes to serve and
# the resident memory idle after it (the plugins now come from the cache).
#
#   make load                     # 1 round of 10 s runs
#   DURATION=20 ROUNDS=3 make load
#
# For a comparison of two builds, of tokens, or of drift on and off: bench/load.sh.
# Needs the bundles (make bundles); installs wrk from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-32}
BATCH_CONNECTIONS=${BATCH_CONNECTIONS:-4}
ROUNDS=${ROUNDS:-1}
BUNDLES=${BUNDLES:-bundles}
LOG_LEVEL=${LOG_LEVEL:-warn}

# shellcheck source=bench/common.sh
source bench/common.sh
cargo build --release -q -p forecourt --features grpc-client --example grpc_load
grpc_load=$target_dir/release/examples/grpc_load

# The bodies: car-price's row as OIP JSON and binary tensors, and a batch of 1,000 cars.
python3 - "$scratch" <<'PY'
import json, struct, sys
scratch = sys.argv[1]
features = [20000, 4, 4, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
as_json = {"inputs": [
    {"name": "features", "shape": [1, 17], "datatype": "FP32", "data": features},
    {"name": "years_ahead", "shape": [1, 1], "datatype": "FP32", "data": [0]}],
    "outputs": [{"name": "price"}]}
open(f"{scratch}/v2-json.body", "w").write(json.dumps(as_json))
header = json.dumps({"inputs": [
    {"name": "features", "shape": [1, 17], "datatype": "FP32", "parameters": {"binary_data_size": 68}},
    {"name": "years_ahead", "shape": [1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}],
    "outputs": [{"name": "price", "parameters": {"binary_data": True}}]}).encode()
with open(f"{scratch}/v2-binary.body", "wb") as out:
    out.write(header + struct.pack("<17f", *features) + struct.pack("<f", 0))
open(f"{scratch}/v2-binary.length", "w").write(str(len(header)))
makes = ["chevrolet", "buick", "cadillac", "pontiac", "saab", "saturn"]
cars = [{"make": makes[i % 6], "body": "sedan", "mileage": 5000 + 37 * i, "cylinders": 4 + 2 * (i % 2),
         "doors": 4, "cruise": i % 3 == 0, "sound": i % 2 == 0, "leather": i % 5 == 0} for i in range(1000)]
open(f"{scratch}/batch.body", "w").write(json.dumps({"instances": cars}))
PY

rss_mib() { awk '/^Rss:/ {printf "%.0f", $2 / 1024}' "/proc/$server/smaps_rollup"; }

# record LABEL RESULT TICKS SWITCHES: prints a run and appends "LABEL req/s p50 p99 non2xx
# cpu-us/req switches/req".
record() {
  echo "----- $1 -----"
  echo "$2"
  echo "$2" | wrk_summary "$1" "$3" "$4" >>"$scratch/results"
}

# wrk_run LABEL CONNECTIONS URL [SCRIPT]: warm-up, measured run. SCRIPT's body is in
# $BENCH_BODY ($BENCH_HEADER_LENGTH: binary framing).
wrk_run() {
  local label=$1 connections=$2 url=$3 script=() result ticks switches
  [ -n "${4:-}" ] && script=(-s "$4")
  wrk -t1 -c"$connections" -d"${WARMUP}s" "${script[@]}" "$url" >/dev/null
  ticks=$(cpu_ticks) switches=$(context_switches)
  result=$(wrk -t1 -c"$connections" -d"${DURATION}s" --latency "${script[@]}" "$url")
  record "$label" "$result" $(($(cpu_ticks) - ticks)) $(($(context_switches) - switches))
}

grpc_run() {
  local result ticks switches
  "$grpc_load" "$grpc_address" --connections "$CONNECTIONS" --duration "$WARMUP" --warmup 0 >/dev/null
  ticks=$(cpu_ticks) switches=$(context_switches)
  result=$("$grpc_load" "$grpc_address" --connections "$CONNECTIONS" --duration "$DURATION" --warmup 0)
  record grpc "$result" $(($(cpu_ticks) - ticks)) $(($(context_switches) - switches))
}

: >"$scratch/results"
: >"$scratch/memory"
for round in $(seq 1 "$ROUNDS"); do
  # The durable appliance: every way in turn, then its memory and its disk.
  data=$(mktemp -d -p "$scratch")
  start_server "$data"
  idle=$(rss_mib)
  wrk_run health "$CONNECTIONS" "$address/health"
  wrk_run v1-durable "$CONNECTIONS" "$address/v1/predict/car-price" bench/car-price.lua
  BENCH_BODY=$scratch/v2-json.body wrk_run v2-json "$CONNECTIONS" "$address/v2/models/car-price/infer" bench/post.lua
  BENCH_BODY=$scratch/v2-binary.body BENCH_HEADER_LENGTH=$(cat "$scratch/v2-binary.length") \
    wrk_run v2-binary "$CONNECTIONS" "$address/v2/models/car-price/infer" bench/post.lua
  grpc_run
  BENCH_BODY=$scratch/batch.body wrk_run batch-1000 "$BATCH_CONNECTIONS" "$address/v1/predict/car-price/batch" bench/post.lua
  after=$(rss_mib) threads=$(find "/proc/$server/task" -mindepth 1 -maxdepth 1 | wc -l)
  read -r stored encoded < <(curl -s "$address/health/detailed" |
    python3 -c 'import json,sys; s = json.load(sys.stdin)["store"]["stats"]; print(s["predictions"], s["mean_record_bytes"])')
  stop_server
  # What the store holds on disk once the process is gone (sled's files, logs included).
  bytes=$(du -sb "$data/store" | cut -f1)
  # A restart on the same data: the compiled plugins are cached, the store is clean.
  began=$(date +%s%N)
  start_server "$data"
  cold=$((($(date +%s%N) - began) / 1000000))
  # Idle again, as every start but the first finds it: the first one compiled the plugins,
  # and the allocator keeps what the compiler freed.
  cached_idle=$(rss_mib)
  stop_server
  echo "$round $idle $after $stored $bytes $encoded $cold $threads $cached_idle" >>"$scratch/memory"

  data=$(mktemp -d -p "$scratch")
  FORECOURT_STORE__DURABILITY=relaxed start_server "$data"
  wrk_run v1-relaxed "$CONNECTIONS" "$address/v1/predict/car-price" bench/car-price.lua
  stop_server
done

echo
echo "summary: car-price, $CONNECTIONS connections (batch $BATCH_CONNECTIONS), ${DURATION}s runs, $ROUNDS rounds"
awk '
  {label[NR]=$1; rps[NR]=$2; p50[NR]=$3; p99[NR]=$4; bad[NR]=$5; cpu[NR]=$6; cs[NR]=$7; if ($1 == "health") ceiling[++h]=$2}
  END {
    printf "  %-11s %12s %9s %9s %8s %10s %11s %11s\n", "run", "requests/s", "p50", "p99", "non-2xx", "of /health", "CPU us/req", "switches/req"
    round = 0
    for (i = 1; i <= NR; i++) {
      if (label[i] == "health") round++
      extra = label[i] == "batch-1000" ? sprintf("  (%.2fM rows/min)", rps[i] * 1000 * 60 / 1e6) : ""
      printf "  %-11s %12s %9s %9s %8s %9.1f%% %11s %11s%s\n", label[i], rps[i], p50[i], p99[i], bad[i],
        rps[i] / ceiling[round] * 100, cpu[i], cs[i], extra
    }
  }' "$scratch/results"
while read -r round idle after stored bytes encoded cold threads cached_idle; do
  each=$((bytes / stored))
  printf '  round %s: RSS idle %s MiB, after the load %s MiB (%s threads); %s predictions stored, %s bytes on disk, %s bytes each' \
    "$round" "$idle" "$after" "$threads" "$stored" "$bytes" "$each"
  printf ' (a record is %s bytes encoded: %s.%02dx)\n' "$encoded" "$((each / encoded))" "$((each * 100 / encoded % 100))"
  printf '  round %s: cold start with cached plugins %s ms (exec to GET /health 200), then RSS idle %s MiB\n' \
    "$round" "$cold" "$cached_idle"
done <"$scratch/memory"
