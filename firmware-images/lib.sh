# Shared by the image scripts (sourced, not run): host tools and small helpers.
# shellcheck shell=bash

log() { printf '%s [%s] %s\n' "$(date +%T)" "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Root or `sudo -n` (a developer who is not root), as tests/support does for apt.
as_root() {
  if [[ ${EUID} -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

apt_get() { as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get -q -y "$@"; }

# ensure_apt BINARY PACKAGE [apt-get install options...]: installs PACKAGE with apt when
# BINARY is not on the PATH, running `apt-get update` first if the first try fails.
ensure_apt() {
  local binary=$1 package=$2
  shift 2
  command -v "${binary}" >/dev/null 2>&1 && return 0
  log "installing ${package} (for ${binary})"
  if ! apt_get install --no-install-recommends "$@" "${package}" >/dev/null; then
    apt_get update >/dev/null
    apt_get install --no-install-recommends "$@" "${package}" >/dev/null
  fi
  command -v "${binary}" >/dev/null 2>&1 || die "installing ${package} did not provide ${binary}"
}

# The Debian mirror apt already uses (deb822 or one-line sources), else deb.debian.org.
debian_mirror() {
  local mirror
  mirror=$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | head -n1 | awk '{print $2}')
  [[ -n ${mirror} ]] ||
    mirror=$(grep -hsE '^deb [^#]*/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      head -n1 | awk '{print $2}')
  echo "${mirror:-http://deb.debian.org/debian}"
}

# qemu-system-x86_64: bookworm's own 7.2 conflicts with a qemu-utils from backports, so
# it comes from bookworm-backports (a source line for the same mirror is added if missing).
ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 && return 0
  local codename
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [[ ${codename} == bookworm ]]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports ($(debian_mirror)) to apt's sources"
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$(debian_mirror)" /usr/share/keyrings/debian-archive-keyring.gpg |
        as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
      apt_get update >/dev/null
    fi
    ensure_apt qemu-system-x86_64 qemu-system-x86 -t bookworm-backports
  else
    ensure_apt qemu-system-x86_64 qemu-system-x86
  fi
}

# A free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
