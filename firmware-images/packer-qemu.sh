#!/usr/bin/env bash
# The Packer template's qemu source, end to end, here (`make image-packer`): the payload,
# a self-booting base qcow2 (build-image.sh --packer-base), `packer build
# -only=qemu.forecourt` (the same provisioning as the AMI), then a boot of the result
# from its own boot loader with the checks from outside (boot-test.sh --disk).
#
# Output: target/image/forecourt.qcow2. Under TCG; set PACKER_ACCELERATOR=kvm
# where KVM works.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "${HERE}/.." && pwd)
# shellcheck source=lib.sh
. "${HERE}/lib.sh"

IMAGE_DIR=${FORECOURT_IMAGE_DIR:-${CHECKOUT}/target/image}
OUTPUT=${IMAGE_DIR}/packer-qemu
ensure_apt packer packer
ensure_qemu

started=${SECONDS}
"${HERE}/payload.sh" "${IMAGE_DIR}/payload"
"${HERE}/build-image.sh" --packer-base

t=${SECONDS}
rm -rf "${OUTPUT}"
log "packer build -only=qemu.forecourt (log: ${IMAGE_DIR}/packer-qemu.log)"
(
  cd "${CHECKOUT}"
  export PACKER_CACHE_DIR=${IMAGE_DIR}/packer_cache # not packer_cache/ in the checkout
  packer build -only=qemu.forecourt -color=false \
    -var "payload=${IMAGE_DIR}/payload.tar.gz" \
    -var "qemu_base_image=${IMAGE_DIR}/packer-base.qcow2" \
    -var "qemu_ssh_private_key_file=${IMAGE_DIR}/packer-base.key" \
    -var "qemu_output_directory=${OUTPUT}" \
    -var "qemu_accelerator=${PACKER_ACCELERATOR:-tcg}" \
    packer/forecourt.pkr.hcl
) >"${IMAGE_DIR}/packer-qemu.log" 2>&1 || { tail -n 40 "${IMAGE_DIR}/packer-qemu.log" >&2; die "packer build failed"; }
grep -E 'install.sh|Build .* finished' "${IMAGE_DIR}/packer-qemu.log" >&2 || true
mv "${OUTPUT}/forecourt.qcow2" "${IMAGE_DIR}/forecourt.qcow2"
rm -rf "${OUTPUT}"
log "packer build took $((SECONDS - t)) s: ${IMAGE_DIR}/forecourt.qcow2"

"${HERE}/boot-test.sh" --disk "${IMAGE_DIR}/forecourt.qcow2"
log "image-packer: $((SECONDS - started)) s in all"
