#!/usr/bin/env bash
# Boots the local image (build-image.sh) under QEMU with software emulation (TCG: KVM does
# not work on our build machines) and checks it from outside, as a kiosk would see it:
#
#   1. /health answers 200 (the service is ready: bundles loaded) on a forwarded loopback port;
#   2. a car-price prediction returns a price;
#   3. the audit trail shows the instance's /etc/forecourt/environment took effect;
#   4. from inside (the report units, on the second serial port): forecourt.service is
#      active with no restart, its watchdog keep-alives arrive, `systemd-analyze security`
#      (the exposure score is printed) and `systemd-analyze verify` pass;
#   5. an ACPI power-off: forecourt drains and stops cleanly, the VM exits.
#
#   boot-test.sh            (`make image-test`, after build-image.sh)
#   boot-test.sh --disk D   a disk that boots by itself (GRUB), such as Packer's qemu output
#                           (`make image-packer`): only the checks from outside (1, 2, 5),
#                           since such an image has no instance settings and no report units
#   env: FORECOURT_IMAGE_DIR (target/image), PORT (a free one), BOOT_DEADLINE (600 s),
#        SECURITY_THRESHOLD (fail above this exposure score; default 1.5)
# Logs: target/image/console.log (kernel and systemd), target/image/report.log (ttyS1).
# The image is booted with snapshot=on: it stays as built, every run is a first boot.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "${HERE}/.." && pwd)
# shellcheck source=lib.sh
. "${HERE}/lib.sh"

IMAGE_DIR=${FORECOURT_IMAGE_DIR:-${CHECKOUT}/target/image}
IMAGE=${IMAGE_DIR}/forecourt.raw
DISK=
case ${1:-} in
  "") ;;
  --disk) DISK=${2:?--disk needs a file} ;;
  *) die "usage: boot-test.sh [--disk IMAGE.qcow2]" ;;
esac
BOOT_DEADLINE=${BOOT_DEADLINE:-600}
SECURITY_THRESHOLD=${SECURITY_THRESHOLD:-1.5}
CONSOLE=${IMAGE_DIR}/console.log
REPORT=${IMAGE_DIR}/report.log
MONITOR=${IMAGE_DIR}/monitor.sock

if [[ -n ${DISK} ]]; then
  [[ -f ${DISK} ]] || die "no ${DISK}"
  IMAGE=${DISK}
  # BIOS, GRUB, the kernel from the disk.
  BOOT=(-drive "file=${DISK},format=$(qemu-img info --output=json "${DISK}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["format"])'),if=virtio,snapshot=on")
else
  [[ -f ${IMAGE} ]] || die "no ${IMAGE}; run make image (firmware-images/build-image.sh)"
  BOOT=(-kernel "${IMAGE_DIR}/vmlinuz" -initrd "${IMAGE_DIR}/initrd.img"
    -append "root=/dev/vda rw console=ttyS0 panic=-1"
    -drive "file=${IMAGE},format=raw,if=virtio,snapshot=on")
fi
ensure_qemu
ensure_apt curl curl
PORT=${PORT:-$(free_port)}
BASE_URL=http://127.0.0.1:${PORT}

# The QEMU monitor, over its Unix socket (python3: no socat needed).
monitor() {
  python3 - "${MONITOR}" "$1" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(2)
time.sleep(0.2)  # the greeting
s.sendall(sys.argv[2].encode() + b"\n")
try:
    s.recv(4096)
except OSError:
    pass
EOF
}

QEMU_PID=
cleanup() {
  if [[ -n ${QEMU_PID} ]] && kill -0 "${QEMU_PID}" 2>/dev/null; then
    log "stopping the VM (pid ${QEMU_PID})"
    monitor quit 2>/dev/null || kill "${QEMU_PID}" 2>/dev/null || true
    wait "${QEMU_PID}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

fail() {
  log "FAILED: $*"
  log "last console lines (${CONSOLE}):"
  tail -n 25 "${CONSOLE}" >&2 || true
  log "report so far (${REPORT}):"
  cat "${REPORT}" >&2 || true
  exit 1
}

# Polls "$@" every half second until it succeeds or DEADLINE (seconds since boot) passes.
wait_until() {
  local what=$1
  shift
  while ! "$@"; do
    ((SECONDS - boot_started < BOOT_DEADLINE)) || fail "${what}: not within ${BOOT_DEADLINE} s"
    kill -0 "${QEMU_PID}" 2>/dev/null || fail "${what}: the VM exited"
    sleep 0.5
  done
}

rm -f "${CONSOLE}" "${REPORT}" "${MONITOR}"
log "booting ${IMAGE} (TCG), service port 8080 forwarded to ${BASE_URL}"
boot_started=${SECONDS}
qemu-system-x86_64 \
  -accel tcg -cpu max -smp 2 -m 1536 \
  -nodefaults -display none -no-reboot "${BOOT[@]}" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:${PORT}-:8080" -device virtio-net-pci,netdev=net0 \
  -serial "file:${CONSOLE}" -serial "file:${REPORT}" \
  -monitor "unix:${MONITOR},server,nowait" &
QEMU_PID=$!

# 1. Healthy: 200 only once the service is ready.
health() { curl -sf --max-time 3 "${BASE_URL}/health" >/dev/null 2>&1; }
wait_until "/health answering 200" health
healthy_after=$((SECONDS - boot_started))
log "healthy ${healthy_after} s after qemu started: $(curl -s --max-time 5 "${BASE_URL}/health")"

# 2. A car-price valuation, with the kiosk token provisioned at build; none without it.
KIOSK=(-H "Authorization: Bearer $(cat "${IMAGE_DIR}/kiosk.token")")
VIEWER=(-H "Authorization: Bearer $(cat "${IMAGE_DIR}/viewer.token")")
anonymous=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${BASE_URL}/v1/predict/car-price" -d '{}')
[[ ${anonymous} == 401 ]] || fail "a prediction without a token got ${anonymous}, not 401"
answer=$(curl -sS --max-time 30 "${BASE_URL}/v1/predict/car-price" "${KIOSK[@]}" -H 'content-type: application/json' \
  -d '{"make": "saab", "body": "sedan", "mileage": 20000, "cylinders": 4, "doors": 4, "leather": true,
       "forecast_months": [12]}') || fail "the prediction request failed"
price=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["outputs"]["price"])' "${answer}" 2>/dev/null) ||
  fail "no price in the answer: ${answer}"
log "car-price prediction: price ${price} (${answer})"
detailed=$(curl -sS --max-time 10 "${VIEWER[@]}" "${BASE_URL}/health/detailed") || fail "the /health/detailed request failed"
python3 - "${detailed}" <<'EOF' || fail "unexpected /health/detailed: ${detailed}"
import json, sys
health = json.loads(sys.argv[1])
assert health["onnxruntime"]["library"] == "/usr/lib/forecourt/libonnxruntime.so", health["onnxruntime"]
assert sorted(b["name"] for b in health["bundles"]) == ["car-price", "housing", "iris"], health["bundles"]
system = health["system"]
assert system["memory_total_bytes"] > 0 and system["cpus"] > 0 and system["disk_total_bytes"] > 0, system
print(f"  ONNX Runtime {health['onnxruntime']['library']}; bundles car-price, housing, iris;"
      f" memory {system['memory_used_bytes'] >> 20}/{system['memory_total_bytes'] >> 20} MiB,"
      f" disk free {system['disk_free_bytes'] >> 20} MiB", file=sys.stderr)
EOF

# 3. The instance's environment file reached the service: the audited configuration.
check_instance_settings() {
  local audit
  audit=$(curl -sS --max-time 10 "${VIEWER[@]}" "${BASE_URL}/v1/audit?after=0&limit=10") || fail "the audit request failed"
  python3 - "${audit}" <<'EOF' || fail "/etc/forecourt/environment did not take effect: ${audit}"
import json, sys
records = json.loads(sys.argv[1])["records"]
config = next(r["details"] for r in records if r["kind"] == "config_loaded")
assert config["store"]["retention_max_age_days"] == 30, config["store"]
assert config["data_dir"] == "/var/lib/forecourt" and config["logging"]["format"] == "json", config
EOF
  log "audited configuration: data_dir /var/lib/forecourt, json logs, retention 30 days (from the environment file)"
}

# 4. The report from inside: state, watchdog, verify, and the hardening score.
has_report() { grep -q '^=== forecourt-report end' "${REPORT}" 2>/dev/null; }
check_report() {
  local ready=${REPORT}.ready
  wait_until "the in-guest report" has_report
  sed -n '/^=== forecourt-report begin/,/^=== forecourt-report end/p' "${REPORT}" | tr -d '\r' >"${ready}"
  grep -q '^ActiveState=active' "${ready}" || fail "forecourt.service is not active"
  grep -q '^NRestarts=0' "${ready}" || fail "forecourt.service restarted"
  grep -q '^watchdog: keep-alive received' "${ready}" || fail "no watchdog keep-alive"
  grep -q '^verify: ok' "${ready}" || fail "systemd-analyze verify forecourt.service failed"
  grep -q '^admin token: -rw------- root root, HTTP/1.0 200 OK' "${ready}" ||
    fail "the first boot's admin token is missing, readable by others, or refused: $(grep '^admin token' "${ready}")"
  score=$(sed -n 's/.*Overall exposure level for forecourt.service: \([0-9.]*\).*/\1/p' "${ready}")
  [[ -n ${score} ]] || fail "no exposure score in the report"
  log "systemd-analyze security forecourt.service (in the guest): exposure ${score}; not fully hardened:"
  grep -E '^✗' "${ready}" | sed 's/^/    /' >&2 || true
  python3 -c 'import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))' "${score}" "${SECURITY_THRESHOLD}" ||
    fail "exposure ${score} is above the threshold ${SECURITY_THRESHOLD}"
}

# 5b. How forecourt.service stopped, reported from inside at shutdown.
check_stop_report() {
  local stopped=${REPORT}.stopped
  sed -n '/^=== forecourt-stop-report begin/,/^=== forecourt-stop-report end/p' "${REPORT}" | tr -d '\r' >"${stopped}"
  grep -q '^Result=success' "${stopped}" || fail "forecourt.service did not stop cleanly: $(cat "${stopped}")"
  grep -q 'shut down cleanly' "${stopped}" || fail "no clean shutdown in the journal: $(cat "${stopped}")"
  log "forecourt stopped cleanly (drained, store closed)"
}

if [[ -z ${DISK} ]]; then
  check_instance_settings
  check_report
fi

# 5. Power off (ACPI): systemd stops forecourt (SIGTERM, drain), then the machine.
log "powering off"
monitor system_powerdown
stopped() { ! kill -0 "${QEMU_PID}" 2>/dev/null; }
poweroff_started=${SECONDS}
while ! stopped; do
  ((SECONDS - poweroff_started < 120)) || fail "the VM did not power off within 120 s"
  sleep 0.5
done
wait "${QEMU_PID}" || true
QEMU_PID=
log "powered off $((SECONDS - poweroff_started)) s after the request"
if [[ -n ${DISK} ]]; then
  log "PASSED (${DISK##*/}): healthy after ${healthy_after} s, $((SECONDS - boot_started)) s in all"
  exit 0
fi
check_stop_report
log "PASSED: healthy after ${healthy_after} s, exposure ${score}, $((SECONDS - boot_started)) s in all"
