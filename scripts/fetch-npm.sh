#!/usr/bin/env bash
# Fetch files of one pinned npm package from the npm registry, the only place this project's
# machines reach for JavaScript: the package's tarball is downloaded with curl, its sha256 is
# checked against the value pinned by the caller, and only the named files are extracted.
# No Node.js and no npm client are needed.
#
#   scripts/fetch-npm.sh PACKAGE VERSION SHA256 DEST FILE...
#   scripts/fetch-npm.sh uplot 1.6.32 4b8a...133d runtime/assets/web/vendor/uplot dist/uPlot.iife.min.js LICENSE
#
# FILE is a path inside the package (without `package/`); it lands in DEST under its base
# name. Idempotent: when every file is already in DEST, nothing is fetched.
set -euo pipefail

[ $# -ge 5 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
package=$1 version=$2 sha256=$3 dest=$4
shift 4

missing=0
for file in "$@"; do
  [ -f "$dest/$(basename "$file")" ] || missing=1
done
[ "$missing" = 1 ] || exit 0

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
tarball="$scratch/$package-$version.tgz"
curl --fail --silent --show-error --location --max-time 120 \
  "https://registry.npmjs.org/$package/-/$package-$version.tgz" -o "$tarball"
actual=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  echo "fetch-npm: $package $version has sha256 $actual, not the pinned $sha256" >&2
  exit 1
fi
members=()
for file in "$@"; do members+=("package/$file"); done
tar -xzf "$tarball" -C "$scratch" "${members[@]}"
mkdir -p "$dest"
for file in "$@"; do
  install -m 0644 "$scratch/package/$file" "$dest/$(basename "$file")"
done
