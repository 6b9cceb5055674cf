#!/usr/bin/env bash
# Load benchmark: starts the appliance (release build, durable store, a fresh data folder)
# on a free port with the example bundles, drives it with wrk at 32 connections with
# car-price requests, and prints requests/s and the latency percentiles.
#
#   bench/load.sh                 # 20 s run after a 5 s warm-up
#   DURATION=60 THREADS=2 bench/load.sh
#
# Needs the bundles (make bundles); installs wrk from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
BUNDLES=${BUNDLES:-bundles}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[ -d "$BUNDLES/car-price" ] || { echo "no bundles in $BUNDLES: run 'make bundles' first" >&2; exit 1; }

cargo build --release -q -p forecourt
binary=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/forecourt

data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
FORECOURT_SERVER__LISTEN=127.0.0.1:0 FORECOURT_DATA_DIR="$data" FORECOURT_BUNDLES__DIR="$BUNDLES" \
  FORECOURT_LOGGING__LEVEL=warn "$binary" serve >"$data/stdout" 2>"$data/stderr" &
server=$!

for _ in $(seq 1 200); do
  address=$(sed -n 's/^forecourt listening on //p' "$data/stdout")
  [ -n "$address" ] && curl -sf "$address/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$data/stderr" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$address/health" >/dev/null || { echo "the server did not become ready" >&2; cat "$data/stderr" >&2; exit 1; }

url="$address/v1/predict/car-price"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/car-price.lua "$url" >/dev/null
result=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/car-price.lua "$url")
echo "$result"
echo
echo "summary: car-price, $CONNECTIONS connections, ${DURATION}s, store durability ${FORECOURT_STORE__DURABILITY:-durable}"
echo "$result" | awk '/Requests\/sec/ {print "  requests/s: " $2} / 50%/ {print "  p50: " $2} / 99%/ {print "  p99: " $2} /non-2xx/ {print "  " $0}'
echo "  server resident memory: $(curl -s "$address/metrics" | awk '/^process_resident_memory_bytes/ {printf "%.0f MiB", $2/1048576}')"
echo "  predictions stored: $(curl -s "$address/health/detailed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["stats"]["predictions"])')"
