#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library that the Rust host loads through
# `ort` (feature "load-dynamic").
#
# The library comes from the official onnxruntime wheel on PyPI (the only
# place it can be fetched from on the project's machines): the wheel is
# downloaded with pip, its sha256 is checked against the value pinned below,
# and onnxruntime/capi/libonnxruntime.so.<version> is extracted into the cache
# directory, with a libonnxruntime.so symlink beside it.
#
#   cache dir: $FORECOURT_ORT_CACHE, default <repo>/.cache/onnxruntime
#   prints:    the absolute path of libonnxruntime.so.<version> (last line of stdout)
#
# Idempotent: when the library is already there with the pinned sha256 it only
# fixes the symlink and prints the path (no network, well under a second).
# Needs: bash, python3 with pip (no unzip needed).
set -euo pipefail

ORT_VERSION="1.32.0"
PY_VERSION="3.11"
PY_ABI="cp311"

# sha256 of the wheel and of the extracted library, pinned after downloading
# them once from PyPI (pip download --no-deps --only-binary=:all: ...).
case "$(uname -m)" in
  x86_64|amd64)
    PLATFORM="manylinux_2_28_x86_64"
    ELF_MACHINE=62 # EM_X86_64
    WHEEL_SHA256="5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d"
    LIB_SHA256="6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"
    ;;
  aarch64|arm64)
    PLATFORM="manylinux_2_28_aarch64"
    ELF_MACHINE=183 # EM_AARCH64
    WHEEL_SHA256="2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c"
    LIB_SHA256="49852228a93995158b2a813d4df487d47a1b76b0eaa894507ef49e91b6d7954a"
    ;;
  *)
    echo "fetch-onnxruntime: unsupported machine $(uname -m) (x86_64 and aarch64 are pinned)" >&2
    exit 1
    ;;
esac

WHEEL="onnxruntime-${ORT_VERSION}-${PY_ABI}-${PY_ABI}-${PLATFORM}.whl"
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"
MEMBER="onnxruntime/capi/${LIB_NAME}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
CACHE_DIR="${FORECOURT_ORT_CACHE:-${REPO_ROOT}/.cache/onnxruntime}"

PYTHON="${PYTHON:-python3}"
command -v "${PYTHON}" >/dev/null 2>&1 || { echo "fetch-onnxruntime: ${PYTHON} not found" >&2; exit 1; }

sha256_of() {
  "${PYTHON}" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
EOF
}

# Valid ELF 64-bit little-endian shared object (ET_DYN) for this machine?
check_elf() {
  "${PYTHON}" - "$1" "${ELF_MACHINE}" <<'EOF'
import struct, sys
path, machine = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    head = f.read(20)
if len(head) < 20 or head[:4] != b"\x7fELF":
    sys.exit(f"{path}: not an ELF file")
if head[4] != 2 or head[5] != 1:
    sys.exit(f"{path}: not a 64-bit little-endian ELF file")
e_type, e_machine = struct.unpack_from("<HH", head, 16)
if e_type != 3:
    sys.exit(f"{path}: ELF type {e_type}, expected 3 (shared object)")
if e_machine != machine:
    sys.exit(f"{path}: ELF machine {e_machine}, expected {machine}")
EOF
}

LIB_PATH="${CACHE_DIR}/${LIB_NAME}"
LINK_PATH="${CACHE_DIR}/libonnxruntime.so"

# Fast path: already extracted and intact.
if [[ -f "${LIB_PATH}" && ! -L "${LIB_PATH}" ]] && [[ "$(sha256_of "${LIB_PATH}")" == "${LIB_SHA256}" ]]; then
  if [[ "$(readlink "${LINK_PATH}" 2>/dev/null || true)" != "${LIB_NAME}" ]]; then
    ln -sfn "${LIB_NAME}" "${LINK_PATH}"
  fi
  echo "${LIB_PATH}"
  exit 0
fi

mkdir -p "${CACHE_DIR}"
TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/forecourt-ort.XXXXXX")"
trap 'rm -rf "${TMP_DIR}"' EXIT

echo "fetch-onnxruntime: downloading onnxruntime==${ORT_VERSION} (${PLATFORM}) from PyPI" >&2
# Explicit interpreter/platform tags: the result does not depend on the local python.
"${PYTHON}" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --implementation cp --python-version "${PY_VERSION}" \
  --abi "${PY_ABI}" --platform "${PLATFORM}" \
  -d "${TMP_DIR}" "onnxruntime==${ORT_VERSION}" >&2

if [[ ! -f "${TMP_DIR}/${WHEEL}" ]]; then
  echo "fetch-onnxruntime: expected ${WHEEL}, pip saved: $(ls "${TMP_DIR}")" >&2
  exit 1
fi
got="$(sha256_of "${TMP_DIR}/${WHEEL}")"
if [[ "${got}" != "${WHEEL_SHA256}" ]]; then
  echo "fetch-onnxruntime: sha256 mismatch for ${WHEEL}: got ${got}, pinned ${WHEEL_SHA256}" >&2
  exit 1
fi

# Extract the one member next to its final place, check it, then rename atomically.
"${PYTHON}" - "${TMP_DIR}/${WHEEL}" "${MEMBER}" "${LIB_PATH}.part" <<'EOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
check_elf "${LIB_PATH}.part"
got="$(sha256_of "${LIB_PATH}.part")"
if [[ "${got}" != "${LIB_SHA256}" ]]; then
  rm -f "${LIB_PATH}.part"
  echo "fetch-onnxruntime: sha256 mismatch for ${LIB_NAME}: got ${got}, pinned ${LIB_SHA256}" >&2
  exit 1
fi
chmod 0644 "${LIB_PATH}.part"
mv -f "${LIB_PATH}.part" "${LIB_PATH}"
ln -sfn "${LIB_NAME}" "${LINK_PATH}"

echo "${LIB_PATH}"
