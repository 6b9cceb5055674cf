# What the load benchmarks share (sourced by bench/suite.sh and bench/load.sh, after they set
# BUNDLES and LOG_LEVEL): wrk, the release binary, a scratch folder removed at exit, and one
# appliance at a time on a free port with a fresh data folder.
#
# Sets $binary, $target_dir and $scratch; start_server sets $server, $address and
# $grpc_address (the gRPC port, also on a free port; empty for a build without gRPC); stop_server ends it; cpu_ticks reads
# its CPU time.

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[ -d "$BUNDLES/car-price" ] || { echo "no bundles in $BUNDLES: run 'make bundles' first" >&2; exit 1; }

cargo build --release -q -p forecourt-cli
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
binary=$target_dir/release/forecourt

scratch=$(mktemp -d)
server=
trap 'stop_server; rm -rf "$scratch"' EXIT
stop_server() { [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }; server=; }

# cpu_ticks: the running appliance's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

# context_switches: the running appliance's context switches so far (voluntary and not),
# summed over its living threads. Unlike CPU time it hardly moves with a neighbour's load,
# so it shows a hand-off between threads saved or added on a noisy machine.
context_switches() { cat "/proc/$server"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }

# start_server DATA_DIR [BINARY]: runs the appliance on DATA_DIR and returns once GET /health
# answers 200 (polled every 10 ms, so that its time is the start-up's); sets $address.
start_server() {
  local data=$1 program=${2:-$binary}
  FORECOURT_SERVER__LISTEN=127.0.0.1:0 FORECOURT_GRPC__LISTEN=127.0.0.1:0 FORECOURT_DATA_DIR="$data" FORECOURT_BUNDLES__DIR="$BUNDLES" \
    FORECOURT_LOGGING__LEVEL="$LOG_LEVEL" "$program" serve >"$data/stdout" 2>"$data/stderr" &
  server=$!
  address=
  for _ in $(seq 1 3000); do
    address=$(sed -n 's/^forecourt listening on //p' "$data/stdout")
    if [ -n "$address" ] && curl -sf "$address/health" >/dev/null; then
      # Printed before the HTTP port answers; absent from a build without gRPC (a baseline).
      grpc_address=$(sed -n 's/^forecourt grpc listening on //p' "$data/stdout")
      return 0
    fi
    kill -0 "$server" 2>/dev/null || { cat "$data/stderr" >&2; exit 1; }
    sleep 0.01
  done
  echo "the server did not become ready" >&2; cat "$data/stderr" >&2; exit 1
}

# wrk_summary LABEL TICKS [SWITCHES]: reads wrk --latency output, prints "LABEL req/s p50 p99
# non2xx cpu-us-per-request context-switches-per-request" (TICKS: the appliance's CPU time
# over the run, in clock ticks; SWITCHES: its context switches over the run, "-" without).
wrk_summary() {
  awk -v label="$1" -v ticks="$2" -v switches="${3:--}" -v hz="$(getconf CLK_TCK)" '
    /requests in/ {count=$1} /Requests\/sec/ {rps=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} /non-2xx responses/ {bad=$3}
    END {printf "%s %s %s %s %s %.1f %s\n", label, rps, p50, p99, (bad == "" ? 0 : bad), ticks / hz * 1e6 / count,
      (switches == "-" ? "-" : sprintf("%.2f", switches / count))}'
}
