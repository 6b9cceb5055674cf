#!/usr/bin/env bash
# /v2 JSON tensors against /v2 binary tensors (Triton's binary tensor data extension), side
# by side: one appliance (release build, durable store, a fresh data folder) on a free port
# with the example bundles, and wrk at 32 connections sending the same car-price row to
# /v2/models/car-price/infer, alternating between the two bodies round by round so that the
# machine's noise falls on both. The JSON run asks for `price` as JSON; the binary run sends
# both inputs as binary data and asks for `price` as binary data (tritonclient's defaults).
#
#   bench/v2.sh                   # 2 rounds of 20 s runs each, each after a 5 s warm-up
#   DURATION=10 ROUNDS=3 bench/v2.sh
#
# Needs the bundles (make bundles); installs wrk from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-2}
BUNDLES=${BUNDLES:-bundles}
LOG_LEVEL=${LOG_LEVEL:-warn}

# shellcheck source=bench/common.sh
source bench/common.sh

# The two bodies of the same request: one car-price row (README's example car).
python3 - "$scratch" <<'PY'
import json, struct, sys
scratch = sys.argv[1]
features = [20000, 4, 4, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
years = [0]
as_json = {"inputs": [
    {"name": "features", "shape": [1, 17], "datatype": "FP32", "data": features},
    {"name": "years_ahead", "shape": [1, 1], "datatype": "FP32", "data": years}],
    "outputs": [{"name": "price"}]}
open(f"{scratch}/json.body", "w").write(json.dumps(as_json))
header = json.dumps({"inputs": [
    {"name": "features", "shape": [1, 17], "datatype": "FP32", "parameters": {"binary_data_size": 68}},
    {"name": "years_ahead", "shape": [1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}],
    "outputs": [{"name": "price", "parameters": {"binary_data": True}}]}).encode()
with open(f"{scratch}/binary.body", "wb") as out:
    out.write(header + struct.pack("<17f", *features) + struct.pack("<f", *years))
open(f"{scratch}/binary.length", "w").write(str(len(header)))
PY

data="$scratch/data"
mkdir -p "$data"
start_server "$data"
url="$address/v2/models/car-price/infer"

# Both bodies answer the same price before anything is measured.
json_price=$(curl -sf -H 'content-type: application/json' --data-binary @"$scratch/json.body" "$url" |
  python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["outputs"][0]["data"][0])')
binary_price=$(curl -sf -D "$scratch/headers" -H "Inference-Header-Content-Length: $(cat "$scratch/binary.length")" \
  -H 'content-type:' --data-binary @"$scratch/binary.body" "$url" | python3 -c '
import json, struct, sys
headers = open(sys.argv[1]).read().lower().splitlines()
length = int(next(line.split(":")[1] for line in headers if line.startswith("inference-header-content-length")))
body = sys.stdin.buffer.read()
print("%.2f" % struct.unpack("<f", body[length:length + 4])[0])' "$scratch/headers")
echo "price: JSON $json_price, binary $binary_price"
[ "$json_price" = "$binary_price" ] || { echo "the two bodies answer different prices" >&2; exit 1; }

# run LABEL BODY HEADER_LENGTH: warm-up, measured run; appends "LABEL req/s p50 p99 non2xx".
run() {
  local label=$1 result
  export V2_BODY=$2 V2_HEADER_LENGTH=$3
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/v2.lua "$url" >/dev/null
  result=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/v2.lua "$url")
  echo "----- $label -----"
  echo "$result"
  echo "$result" | awk -v label="$label" '
    /Requests\/sec/ {rps=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} /non-2xx responses/ {bad=$3}
    END {printf "%s %s %s %s %s\n", label, rps, p50, p99, bad}' >>"$scratch/results"
}

: >"$scratch/results"
for _ in $(seq 1 "$ROUNDS"); do
  run "v2-json" "$scratch/json.body" ""
  run "v2-binary" "$scratch/binary.body" "$(cat "$scratch/binary.length")"
done

echo
echo "summary: /v2 car-price, one row, $CONNECTIONS connections, ${DURATION}s runs, $ROUNDS rounds"
printf '  %-10s %10s %9s %9s %8s\n' run requests/s p50 p99 non-2xx
while read -r label rps p50 p99 bad; do
  printf '  %-10s %10s %9s %9s %8s\n' "$label" "$rps" "$p50" "$p99" "$bad"
done <"$scratch/results"
awk '{sum[$1]+=$2; n[$1]++} END {
  j=sum["v2-json"]/n["v2-json"]; b=sum["v2-binary"]/n["v2-binary"];
  printf "  mean requests/s: JSON %.0f, binary %.0f (%+.1f%%)\n", j, b, (b-j)/j*100 }' "$scratch/results"
