#!/usr/bin/env bash
# Builds the local appliance image without Docker, KVM or a downloaded image: Debian
# bookworm from the mirror apt uses (debootstrap), Forecourt installed by install.sh (the
# provisioning the Packer sources run), one unpartitioned ext4 file system.
#
#   build-image.sh                 the local image (`make image`, after `make bundles`)
#   build-image.sh --packer-base   the base qcow2 for Packer's qemu source (`make image-packer`)
#
# Writes into target/image/ (FORECOURT_IMAGE_DIR):
#   payload/, payload.tar.gz  what install.sh installs (payload.sh): what Packer uploads
#   base/              debootstrap minbase + kernel, systemd, udev, networkd: cached, rebuilt
#                      only when the package list, suite or mirror change (delete it to force)
#   rootfs.layer/      what the image adds to the base: Forecourt (install.sh), this image's
#                      instance settings and test units (mounted over base/ at rootfs/ while
#                      building, with overlayfs)
#   forecourt.raw      the ext4 image (label forecourt-root, no partition table), sparse
#   vmlinuz, initrd.img  the image's kernel, for qemu -kernel (boot-test.sh)
# With --packer-base instead:
#   packer-base.qcow2  base + GRUB + OpenSSH on a partitioned disk that boots by itself,
#                      root admitted by packer-base.key (a key made for this build only)
# Needs root (debootstrap, chroot, a loop device for --packer-base); uses sudo -n when not
# root. Installs debootstrap, e2fsprogs and fdisk with apt when missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "${HERE}/.." && pwd)
# shellcheck source=lib.sh
. "${HERE}/lib.sh"

MODE=local
case ${1:-} in
  "") ;;
  --packer-base) MODE=packer-base ;;
  *) die "usage: build-image.sh [--packer-base]" ;;
esac

IMAGE_DIR=${FORECOURT_IMAGE_DIR:-${CHECKOUT}/target/image}
started=${SECONDS}
step() { log "$1 took $((SECONDS - $2)) s"; }

# 1. The payload, exactly what Packer uploads: made as the invoking user (before sudo),
# so that it stays theirs.
if [[ ${MODE} == local && -z ${FORECOURT_PAYLOAD_READY:-} ]]; then
  t=${SECONDS}
  "${HERE}/payload.sh" "${IMAGE_DIR}/payload"
  step "payload" "${t}"
  export FORECOURT_PAYLOAD_READY=1
fi

if [[ ${EUID} -ne 0 ]]; then
  exec sudo -n --preserve-env=FORECOURT_IMAGE_DIR,DEBIAN_MIRROR,FORECOURT_PAYLOAD_READY "$0" "$@"
fi

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
# What the appliance needs from the OS beyond minbase: a kernel, systemd as init, udev,
# networkd (in systemd) for DHCP, dbus for systemctl and logind (the ACPI power button).
BASE_PACKAGES=(linux-image-amd64 systemd systemd-sysv udev iproute2 dbus)
BASE=${IMAGE_DIR}/base
ROOTFS=${IMAGE_DIR}/rootfs
IMAGE=${IMAGE_DIR}/forecourt.raw
LABEL=forecourt-root

ensure_apt debootstrap debootstrap
ensure_apt mkfs.ext4 e2fsprogs
mkdir -p "${IMAGE_DIR}"

# Mounts (and loop devices, as loop:/dev/loopN), undone in reverse order; all of them on
# exit, even on failure.
MOUNTED=()
unmount_from() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= $1; i--)); do
    case ${MOUNTED[i]} in
      loop:*) losetup -d "${MOUNTED[i]#loop:}" ;;
      *) umount "${MOUNTED[i]}" || umount -l "${MOUNTED[i]}" ;;
    esac
    unset 'MOUNTED[i]'
  done
}
trap 'unmount_from 0' EXIT

# What apt needs in a chroot.
mount_chroot() {
  local root=$1
  CHROOT_MOUNTS=${#MOUNTED[@]}
  mount -t proc proc "${root}/proc"
  MOUNTED+=("${root}/proc")
  mount -t sysfs sysfs "${root}/sys"
  MOUNTED+=("${root}/sys")
  mount --bind /dev "${root}/dev"
  MOUNTED+=("${root}/dev")
  mount --bind /dev/pts "${root}/dev/pts"
  MOUNTED+=("${root}/dev/pts")
}
unmount_chroot() { unmount_from "${CHROOT_MOUNTS}"; }

# target/image/NAME: the base with a writable layer on top (overlayfs; the layer is
# NAME.layer), so a tree costs no copy of the base (and no slow removal of one).
mount_overlay() {
  local merged=${IMAGE_DIR}/$1 layer=${IMAGE_DIR}/$1.layer work=${IMAGE_DIR}/$1.work
  if mountpoint -q "${merged}"; then umount "${merged}"; fi # an interrupted run's
  rm -rf "${merged}" "${layer}" "${work}"
  mkdir -p "${merged}" "${layer}" "${work}"
  mount -t overlay overlay -o "lowerdir=${BASE},upperdir=${layer},workdir=${work}" "${merged}"
  MOUNTED+=("${merged}")
}

# 2. The base system, cached.
stamp="suite=${SUITE} mirror=${MIRROR} packages=${BASE_PACKAGES[*]} recipe=3"
if [[ -f ${BASE}/.forecourt-base && $(<"${BASE}/.forecourt-base") == "${stamp}" ]]; then
  log "base: reusing ${BASE} (delete it to rebuild)"
else
  rm -rf "${BASE}" "${BASE}.partial"
  t=${SECONDS}
  log "base: debootstrap --variant=minbase ${SUITE} from ${MIRROR}"
  debootstrap --variant=minbase "${SUITE}" "${BASE}.partial" "${MIRROR}" >"${IMAGE_DIR}/debootstrap.log" 2>&1 ||
    { tail -n 30 "${IMAGE_DIR}/debootstrap.log" >&2; die "debootstrap failed (log: ${IMAGE_DIR}/debootstrap.log)"; }
  step "debootstrap" "${t}"

  t=${SECONDS}
  log "base: installing ${BASE_PACKAGES[*]}"
  # No service may start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"${BASE}.partial/usr/sbin/policy-rc.d"
  chmod 0755 "${BASE}.partial/usr/sbin/policy-rc.d"
  mount_chroot "${BASE}.partial"
  chroot "${BASE}.partial" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
    apt-get -q -y install --no-install-recommends "${BASE_PACKAGES[@]}" >"${IMAGE_DIR}/base-apt.log" 2>&1 ||
    { tail -n 30 "${IMAGE_DIR}/base-apt.log" >&2; die "apt-get in the chroot failed (log: ${IMAGE_DIR}/base-apt.log)"; }
  chroot "${BASE}.partial" apt-get clean
  # The OS side of the image: DHCP with networkd (which also enables its wait-online,
  # behind network-online.target), the root file system by label, a fresh machine id on
  # first boot, a hostname.
  mkdir -p "${BASE}.partial/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"${BASE}.partial/etc/systemd/network/80-dhcp.network"
  chroot "${BASE}.partial" systemctl enable systemd-networkd.service >/dev/null 2>&1
  printf 'LABEL=%s / ext4 rw,errors=remount-ro 0 1\n' "${LABEL}" >"${BASE}.partial/etc/fstab"
  echo forecourt >"${BASE}.partial/etc/hostname"
  : >"${BASE}.partial/etc/machine-id"
  rm -f "${BASE}.partial/var/lib/dbus/machine-id" "${BASE}.partial/usr/sbin/policy-rc.d"
  rm -rf "${BASE}.partial"/var/lib/apt/lists/* "${BASE}.partial"/var/cache/apt/*.bin
  unmount_chroot
  echo "${stamp}" >"${BASE}.partial/.forecourt-base"
  mv "${BASE}.partial" "${BASE}"
  step "base packages" "${t}"
fi

# --packer-base: a disk that boots by itself (GRUB) and admits the build's key over SSH.
if [[ ${MODE} == packer-base ]]; then
  ensure_apt sfdisk fdisk
  ensure_apt qemu-img qemu-utils
  tree=${IMAGE_DIR}/packer-base-root
  raw=${IMAGE_DIR}/packer-base.raw
  t=${SECONDS}
  mount_overlay packer-base-root
  rm -f "${tree}/.forecourt-base"
  printf '#!/bin/sh\nexit 101\n' >"${tree}/usr/sbin/policy-rc.d"
  chmod 0755 "${tree}/usr/sbin/policy-rc.d"
  mount_chroot "${tree}"
  { chroot "${tree}" apt-get -q update &&
    chroot "${tree}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
      apt-get -q -y install --no-install-recommends grub-pc-bin grub2-common openssh-server; } \
    >"${IMAGE_DIR}/packer-base-apt.log" 2>&1 ||
    { tail -n 30 "${IMAGE_DIR}/packer-base-apt.log" >&2; die "apt-get in the chroot failed"; }
  chroot "${tree}" apt-get clean
  unmount_chroot
  rm -rf "${tree}/usr/sbin/policy-rc.d" "${tree}"/var/lib/apt/lists/*
  rm -f "${IMAGE_DIR}/packer-base.key" "${IMAGE_DIR}/packer-base.key.pub"
  ssh-keygen -q -t ed25519 -N '' -C forecourt-packer-build -f "${IMAGE_DIR}/packer-base.key"
  # Packer runs as the developer, who must be able to read the key.
  [[ -z ${SUDO_UID:-} ]] || chown "${SUDO_UID}:${SUDO_GID:-${SUDO_UID}}" "${IMAGE_DIR}"/packer-base.key*
  install -d -m 0700 "${tree}/root/.ssh"
  install -m 0600 "${IMAGE_DIR}/packer-base.key.pub" "${tree}/root/.ssh/authorized_keys"
  printf 'GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX="console=ttyS0 panic=-1"\nGRUB_TERMINAL=serial\nGRUB_DISABLE_LINUX_UUID=true\n' \
    >>"${tree}/etc/default/grub"
  step "packer base packages" "${t}"

  # One bootable partition; the host kernel does not scan loop devices for partitions
  # by itself (partx -a), and there is no udev on the host (root=LABEL= afterwards).
  t=${SECONDS}
  rm -f "${raw}"
  truncate -s 4G "${raw}"
  echo 'start=2048, type=83, bootable' | sfdisk -q "${raw}"
  loop=$(losetup -P --find --show "${raw}")
  MOUNTED+=("loop:${loop}")
  partx -a "${loop}" 2>/dev/null || true
  [[ -b ${loop}p1 ]] || die "no ${loop}p1 after partx"
  mkfs.ext4 -q -L "${LABEL}" -d "${tree}" "${loop}p1"
  mnt=${IMAGE_DIR}/packer-base-mnt
  mkdir -p "${mnt}"
  mount "${loop}p1" "${mnt}"
  MOUNTED+=("${mnt}")
  mount_chroot "${mnt}"
  chroot "${mnt}" grub-install --target=i386-pc "${loop}" >"${IMAGE_DIR}/grub.log" 2>&1 ||
    { cat "${IMAGE_DIR}/grub.log" >&2; die "grub-install failed"; }
  chroot "${mnt}" update-grub >>"${IMAGE_DIR}/grub.log" 2>&1 || { cat "${IMAGE_DIR}/grub.log" >&2; die "update-grub failed"; }
  sed -i "s|root=${loop}p1|root=LABEL=${LABEL}|g" "${mnt}/boot/grub/grub.cfg"
  grep -q "root=LABEL=${LABEL}" "${mnt}/boot/grub/grub.cfg" || die "grub.cfg names no root=LABEL=${LABEL}"
  unmount_from 0
  qemu-img convert -O qcow2 "${raw}" "${IMAGE_DIR}/packer-base.qcow2"
  rm -rf "${raw}" "${tree}" "${tree}.layer" "${tree}.work" "${mnt}"
  step "packer base disk" "${t}"
  log "packer base: ${IMAGE_DIR}/packer-base.qcow2, key ${IMAGE_DIR}/packer-base.key; $((SECONDS - started)) s in all"
  exit 0
fi

# 3. The image's tree: base + Forecourt (install.sh, as Packer runs it) + instance settings.
t=${SECONDS}
mount_overlay rootfs
rm -f "${ROOTFS}/.forecourt-base"
"${IMAGE_DIR}/payload/install.sh" "${ROOTFS}"
# What cloud-init user-data would write on a cloud instance (README, "The appliance image").
# The retention value is the boot test's proof that the file reaches the service.
cat >"${ROOTFS}/etc/forecourt/environment" <<'EOF'
FORECOURT_MQTT__DEVICE_ID=local-image
FORECOURT_STORE__RETENTION_MAX_AGE_DAYS=30
EOF
chmod 0640 "${ROOTFS}/etc/forecourt/environment"
# API tokens for the boot test's requests from outside, made as an operator's provisioning
# would (cloud-init runcmd: `forecourt token add`); the image keeps only their digests. The
# first boot adds the admin token (forecourt-first-token.service), which the in-guest report uses.
rm -f "${IMAGE_DIR}/kiosk.token" "${IMAGE_DIR}/viewer.token"
for role in kiosk viewer; do
  FORECOURT_AUTH__TOKENS_FILE="${ROOTFS}/etc/forecourt/keys/tokens.json" \
    "${ROOTFS}/usr/bin/forecourt" token add --role "${role}" --name "boot-test-${role}" \
    --out "${IMAGE_DIR}/${role}.token" >/dev/null 2>&1 || die "forecourt token add --role ${role} failed"
done
# The boot test's report units (they only print to the second serial port).
install -D -m 0755 "${HERE}/test/report.sh" "${ROOTFS}/usr/local/lib/forecourt-test/report.sh"
for unit in forecourt-report.service forecourt-stop-report.service; do
  install -m 0644 "${HERE}/test/${unit}" "${ROOTFS}/etc/systemd/system/${unit}"
  ln -sfn "/etc/systemd/system/${unit}" "${ROOTFS}/etc/systemd/system/multi-user.target.wants/${unit}"
done
step "install" "${t}"

# 4. The file system image, straight from the tree (no loop device, no mount).
t=${SECONDS}
size_mib=$(($(du -sm "${ROOTFS}" | cut -f1) * 3 / 2 + 512))
rm -f "${IMAGE}"
mkfs.ext4 -q -F -L "${LABEL}" -d "${ROOTFS}" "${IMAGE}" "${size_mib}M" >/dev/null
kernel=$(find "${ROOTFS}/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
[[ -n ${kernel} ]] || die "no kernel in ${ROOTFS}/boot"
cp "${kernel}" "${IMAGE_DIR}/vmlinuz"
cp "${ROOTFS}/boot/initrd.img-${kernel##*/vmlinuz-}" "${IMAGE_DIR}/initrd.img"
unmount_from 0
rm -rf "${ROOTFS}.work"
step "mkfs.ext4" "${t}"

log "image: ${IMAGE} (${size_mib} MiB, $(du -sh "${IMAGE}" | cut -f1) used), kernel ${kernel##*/}; $((SECONDS - started)) s in all"
