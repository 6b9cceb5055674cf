#!/usr/bin/env bash
# Installs Forecourt into a Debian root: the one provisioning step every image shares
# (the local image of build-image.sh, and both Packer sources: amazon-ebs and qemu).
#
#   install.sh [ROOT]          ROOT: the tree to install into (default /, a running system)
#
# It takes its files from the folder it lives in, as assembled by payload.sh (what Packer
# uploads): forecourt, lib/libonnxruntime.so.*, bundles/, rootfs/. Run from a checkout
# (firmware-images/install.sh) after `make bundles`, it takes target/release/forecourt,
# .cache/onnxruntime/ and bundles/ instead.
#
# Lays out:
#   /usr/bin/forecourt                              the binary
#   /usr/lib/forecourt/libonnxruntime.so.<v>, .so   ONNX Runtime (named in forecourt.toml)
#   /usr/share/forecourt/bundles/<name>/<version>/  the preinstalled bundles, read-only
#   /etc/forecourt/forecourt.toml                   production defaults
#   /etc/forecourt/keys/                            the device's keys, root:forecourt 0750
#   /etc/forecourt/trusted/                         bundle-signing public keys
#   /usr/lib/systemd/system/forecourt.service       the unit, enabled
#   /usr/lib/systemd/system/forecourt-first-token.service   the first admin token (first boot)
#   /usr/lib/sysusers.d/forecourt.conf              the forecourt system user (created now)
# /var/lib/forecourt (the data) is created by systemd at first start (StateDirectory=),
# so the image holds no state. Idempotent: running it again upgrades in place.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d ${1:-/} ]] || { echo "install.sh: ${1} is not a folder" >&2; exit 1; }
ROOT=$(cd "${1:-/}" && pwd)
ROOT=${ROOT%/} # "" for /

if [[ -f ${HERE}/forecourt ]]; then # a payload
  BINARY=${HERE}/forecourt
  LIBRARY_DIR=${HERE}/lib
  BUNDLES=${HERE}/bundles
else # a checkout
  CHECKOUT=$(cd "${HERE}/.." && pwd)
  BINARY=${CHECKOUT}/target/release/forecourt
  LIBRARY_DIR=${CHECKOUT}/.cache/onnxruntime
  BUNDLES=${CHECKOUT}/bundles
fi
FILES=${HERE}/rootfs

[[ -x ${BINARY} ]] || { echo "install.sh: no binary at ${BINARY} (make build)" >&2; exit 1; }
LIBRARY=$(find "${LIBRARY_DIR}" -maxdepth 1 -type f -name 'libonnxruntime.so.*' | sort | tail -n1)
[[ -n ${LIBRARY} ]] || { echo "install.sh: no libonnxruntime.so.* in ${LIBRARY_DIR} (make setup)" >&2; exit 1; }
compgen -G "${BUNDLES}/*/*/bundle.toml" >/dev/null ||
  { echo "install.sh: no bundles in ${BUNDLES} (make bundles)" >&2; exit 1; }

echo "install.sh: installing Forecourt into ${ROOT:-/}" >&2

# The system user first, so files can be given its group. systemd-sysusers reads the
# file from ROOT; at boot systemd-sysusers.service would create the user as well.
install -D -m 0644 "${FILES}/usr/lib/sysusers.d/forecourt.conf" "${ROOT}/usr/lib/sysusers.d/forecourt.conf"
if [[ -z ${ROOT} ]]; then
  systemd-sysusers /usr/lib/sysusers.d/forecourt.conf
else
  systemd-sysusers --root="${ROOT}" "${ROOT}/usr/lib/sysusers.d/forecourt.conf"
fi

install -D -m 0755 "${BINARY}" "${ROOT}/usr/bin/forecourt"

install -d -m 0755 "${ROOT}/usr/lib/forecourt"
rm -f "${ROOT}"/usr/lib/forecourt/libonnxruntime.so*
install -m 0644 "${LIBRARY}" "${ROOT}/usr/lib/forecourt/"
ln -s "$(basename "${LIBRARY}")" "${ROOT}/usr/lib/forecourt/libonnxruntime.so"

# Bundles: replaced as a whole (a bundle left over from an older image must not load).
rm -rf "${ROOT}/usr/share/forecourt/bundles"
install -d -m 0755 "${ROOT}/usr/share/forecourt/bundles"
cp -R --no-preserve=ownership,mode "${BUNDLES}/." "${ROOT}/usr/share/forecourt/bundles/"
chmod -R u=rwX,go=rX "${ROOT}/usr/share/forecourt/bundles"
install -m 0644 "${FILES}/usr/share/forecourt/environment.example" "${ROOT}/usr/share/forecourt/"

# Configuration: an operator's edited forecourt.toml is kept, the new one put beside it.
install -d -m 0755 "${ROOT}/etc/forecourt"
config=${ROOT}/etc/forecourt/forecourt.toml
if [[ -f ${config} ]] && ! cmp -s "${config}" "${FILES}/etc/forecourt/forecourt.toml"; then
  install -m 0644 "${FILES}/etc/forecourt/forecourt.toml" "${config}.new"
  echo "install.sh: kept the existing ${config}; the new defaults are in forecourt.toml.new" >&2
else
  install -m 0644 "${FILES}/etc/forecourt/forecourt.toml" "${config}"
fi
# Public keys that bundles must be signed with ([trust] in forecourt.toml).
install -d -m 0755 "${ROOT}/etc/forecourt/trusted"
# The device's own keys and certificates (MQTT, later): readable by the service only.
forecourt_gid=$(awk -F: '$1 == "forecourt" {print $3}' "${ROOT}/etc/group")
[[ -n ${forecourt_gid} ]] || { echo "install.sh: no forecourt group in ${ROOT}/etc/group" >&2; exit 1; }
install -d -m 0750 -o 0 -g "${forecourt_gid}" "${ROOT}/etc/forecourt/keys"

install -D -m 0644 "${FILES}/usr/lib/systemd/system/forecourt.service" \
  "${ROOT}/usr/lib/systemd/system/forecourt.service"
install -D -m 0644 "${FILES}/usr/lib/systemd/system/forecourt-first-token.service" \
  "${ROOT}/usr/lib/systemd/system/forecourt-first-token.service"
install -d -m 0755 "${ROOT}/etc/systemd/system/multi-user.target.wants" "${ROOT}/etc/systemd/system/forecourt.service.wants"
ln -sfn /usr/lib/systemd/system/forecourt.service \
  "${ROOT}/etc/systemd/system/multi-user.target.wants/forecourt.service"
ln -sfn /usr/lib/systemd/system/forecourt-first-token.service \
  "${ROOT}/etc/systemd/system/forecourt.service.wants/forecourt-first-token.service"
if [[ -z ${ROOT} ]] && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi

echo "install.sh: done: $("${ROOT}/usr/bin/forecourt" --version 2>/dev/null || echo forecourt)," \
  "$(basename "${LIBRARY}"), bundles: $(cd "${BUNDLES}" && echo */*/)" >&2
