#!/usr/bin/env bash
# CI's check of the image template (`make packer-validate`, part of `make test`): `packer
# validate` and `packer fmt -check` with the Packer in Debian's apt (1.6.6), installed when
# missing. Needs no cloud credentials and no network besides apt.
#
# 1.6.6 is validated on forecourt.pkr.hcl by name (it rejects plugins.pkr.hcl's
# required_plugins); current Packer validates the folder, plugins included, once
# `packer init` has installed them.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../firmware-images/lib.sh
. "${HERE}/../firmware-images/lib.sh"

ensure_apt packer packer
cd "${HERE}"
version=$(packer version | head -n1)
# The template, not the checkout's state: the qemu source refuses an existing output folder.
vars=(-var "qemu_output_directory=$(mktemp -u -d)")
case ${version} in
  "Packer v1.6."*) packer validate "${vars[@]}" forecourt.pkr.hcl ;;
  *) packer validate "${vars[@]}" . ;;
esac
packer fmt -check -diff .
echo "packer/validate.sh: forecourt.pkr.hcl is valid and formatted (${version})"
