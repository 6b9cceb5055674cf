#!/bin/sh
# The boot test's view from inside the guest (test image only), printed to ttyS1, which
# boot-test.sh reads from outside. `report.sh ready`: once forecourt.service is active
# (Type=notify: after READY=1); `report.sh stopped`: once it has stopped, at shutdown.
set -eu
unit=forecourt.service

if [ "${1:-}" = stopped ]; then
  echo "=== forecourt-stop-report begin"
  systemctl show "${unit}" -p Result -p ExecMainCode -p ExecMainStatus --no-pager
  journalctl -u "${unit}" -o cat --no-pager -n 6
  echo "=== forecourt-stop-report end"
  exit 0
fi

echo "=== forecourt-report begin"
systemctl show "${unit}" -p Type -p ActiveState -p SubState -p StatusText -p NRestarts -p User \
  -p WatchdogUSec -p MemoryMax -p MemoryCurrent --no-pager
# The watchdog: the keep-alive timestamp moves within one period (WatchdogSec/2 apart).
first=$(systemctl show "${unit}" -p WatchdogTimestampMonotonic --value)
deadline=$(($(cut -d. -f1 /proc/uptime) + 45))
watchdog="no keep-alive within 45 s"
while [ "$(cut -d. -f1 /proc/uptime)" -lt "${deadline}" ]; do
  now=$(systemctl show "${unit}" -p WatchdogTimestampMonotonic --value)
  if [ "${now}" != "${first}" ]; then
    watchdog="keep-alive received (${first} -> ${now})"
    break
  fi
  sleep 1
done
echo "watchdog: ${watchdog}"
# The first boot's admin token: root's alone, and accepted by the service.
token=/etc/forecourt/admin.token
if [ -f "${token}" ]; then
  mode=$(stat -c '%A %U %G' "${token}")
  status=$(bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET /v1/audit/verify HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n" "$(cat "$1")" >&3 && head -n1 <&3' _ "${token}" | tr -d '\r')
  echo "admin token: ${mode}, ${status}"
else
  echo "admin token: missing"
fi
echo "--- systemd-analyze security ${unit}"
systemd-analyze security --no-pager "${unit}" || true
echo "--- systemd-analyze verify ${unit}"
if systemd-analyze verify "${unit}" 2>&1; then echo "verify: ok"; else echo "verify: failed"; fi
echo "--- journal"
journalctl -u "${unit}" -o cat --no-pager -n 12
echo "=== forecourt-report end"
