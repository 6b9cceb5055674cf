#!/usr/bin/env bash
# Assembles what install.sh installs into one folder and one tarball: the payload that
# the local image build copies and that both Packer sources upload.
#
#   payload.sh [OUT]     default OUT: target/image/payload (tarball: OUT.tar.gz)
#
# Needs `make bundles` first (the release binary, ONNX Runtime in .cache/, bundles/).
# The binary is copied without its debug line tables (151 MB -> ~40 MB); symbols stay, so
# a panic's backtrace still names functions.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "${HERE}/.." && pwd)
OUT=${1:-${CHECKOUT}/target/image/payload}

BINARY=${CHECKOUT}/target/release/forecourt
[[ -x ${BINARY} ]] || { echo "payload.sh: no ${BINARY}; run make bundles" >&2; exit 1; }
LIBRARY=$(find "${CHECKOUT}/.cache/onnxruntime" -maxdepth 1 -type f -name 'libonnxruntime.so.*' | sort | tail -n1)
[[ -n ${LIBRARY} ]] || { echo "payload.sh: no ONNX Runtime in .cache/onnxruntime; run make setup" >&2; exit 1; }
compgen -G "${CHECKOUT}/bundles/*/*/bundle.toml" >/dev/null || { echo "payload.sh: no bundles; run make bundles" >&2; exit 1; }

rm -rf "${OUT}"
mkdir -p "${OUT}/lib"
cp "${HERE}/install.sh" "${OUT}/"
cp -R "${HERE}/rootfs" "${OUT}/rootfs"
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "${BINARY}" "${OUT}/forecourt"
else
  cp "${BINARY}" "${OUT}/forecourt"
fi
cp "${LIBRARY}" "${OUT}/lib/"
cp -R "${CHECKOUT}/bundles" "${OUT}/bundles"
tar -C "${OUT}" -czf "${OUT}.tar.gz" .
echo "payload.sh: ${OUT} ($(du -sh "${OUT}" | cut -f1)), ${OUT}.tar.gz ($(du -sh "${OUT}.tar.gz" | cut -f1))" >&2
