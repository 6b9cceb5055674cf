#!/usr/bin/env bash
# Fuzz the parsers that take outside input (`make fuzz`; not part of `make test`): each
# target of runtime/fuzz runs for a fixed time, then a summary prints per target the
# inputs tried, the coverage reached and what was found.
#
#   FUZZ_SECONDS  seconds per target (default 120)
#   FUZZ_TARGETS  the targets to run, space-separated (default: all five)
#   CARGO         the cargo command (default cargo; e.g. "nice -n 19 cargo")
#
# cargo-fuzz (libFuzzer, with AddressSanitizer) is installed when missing. It needs
# nightly-only -Z flags; this project's one toolchain is stable, so RUSTC_BOOTSTRAP=1
# lets the stable compiler take them. No target runs a model, so ONNX Runtime (loaded at
# run time only) is not needed.
#
# Per target: runtime/fuzz/corpus/<target>/ is the working corpus (the committed seeds of
# runtime/fuzz/seeds/<target>/ are copied in first, and it grows from run to run),
# runtime/fuzz/artifacts/<target>/ receives what crashed, timed out or ran out of memory,
# and runtime/fuzz/logs/<target>.log has libFuzzer's output. Exits 1 if anything was found.
# A finding is reproduced with `runtime/fuzz/target/x86_64-unknown-linux-gnu/release/<target> <artifact>`,
# then fixed in the parser with a unit test beside it (see the README).
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_DIR=runtime/fuzz
ALL_TARGETS="v1_request v2_tensors bundle_manifest bundle_archive fleet_message"
SECONDS_PER_TARGET=${FUZZ_SECONDS:-120}
read -r -a TARGETS <<<"${FUZZ_TARGETS:-$ALL_TARGETS}"
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
CARGO_FUZZ_VERSION=0.13.2

# The longest input each target is given: a little over its largest seed, so mutations can
# grow it, and small enough to keep the executions per second high.
max_len() {
  case "$1" in
    v1_request) echo 4096 ;;
    v2_tensors | bundle_archive) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

for target in "${TARGETS[@]}"; do
  if [[ " $ALL_TARGETS " != *" $target "* ]]; then
    echo "fuzz: unknown target $target (targets: $ALL_TARGETS)" >&2
    exit 2
  fi
done
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: FUZZ_SECONDS must be a positive number of seconds, not $SECONDS_PER_TARGET" >&2
  exit 2
fi

if ! "${CARGO_CMD[@]}" fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  "${CARGO_CMD[@]}" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# Release with debug assertions and overflow checks (-O -a), AddressSanitizer (cargo-fuzz's
# default). 16 codegen units instead of cargo-fuzz's 1: the first build of wasmtime and the
# rest with instrumentation is long on two cores, and the targets lose little speed.
BUILD_FLAGS=(-O -a --codegen-units 16)
echo "fuzz: building ${TARGETS[*]} (the first build takes long: every dependency is instrumented)"
for target in "${TARGETS[@]}"; do
  (cd runtime && RUSTC_BOOTSTRAP=1 "${CARGO_CMD[@]}" fuzz build "${BUILD_FLAGS[@]}" "$target")
done
BIN_DIR=$FUZZ_DIR/target/x86_64-unknown-linux-gnu/release

mkdir -p "$FUZZ_DIR/logs"
summary=()
found=0
for target in "${TARGETS[@]}"; do
  corpus=$FUZZ_DIR/corpus/$target
  artifacts=$FUZZ_DIR/artifacts/$target
  log=$FUZZ_DIR/logs/$target.log
  mkdir -p "$corpus" "$artifacts"
  cp -n "$FUZZ_DIR/seeds/$target"/* "$corpus"/
  before=$(find "$artifacts" -type f | wc -l)
  dict=()
  [[ -f $FUZZ_DIR/dicts/$target.dict ]] && dict=("-dict=$FUZZ_DIR/dicts/$target.dict")
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s (log: $log)"
  status=0
  # -timeout: one input taking 10 s is a finding (a parser's normal input takes
  # microseconds); -rss_limit_mb: 2 GiB, well below the machine's memory.
  "$BIN_DIR/$target" "$corpus" \
    -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$target")" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
  [[ -n $runs ]] || runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  execs=$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' <<<"$last")
  new=$(($(find "$artifacts" -type f | wc -l) - before))
  result=none
  if ((status != 0 || new > 0)); then
    found=1
    result="FOUND (exit $status, $new new in $artifacts): $(grep -m 1 -E 'ERROR: libFuzzer|panicked at|ERROR: AddressSanitizer' "$log" || echo "see $log")"
  fi
  summary+=("$(printf '%-16s %12s %8s %8s %8s  %s' "$target" "${runs:-?}" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result")")
done

echo
printf '%-16s %12s %8s %8s %8s  %s\n' target inputs exec/s cov features found
printf '%s\n' "${summary[@]}"
exit "$found"
