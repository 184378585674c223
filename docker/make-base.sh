#!/usr/bin/env bash
# The air-gapped base: Debian bookworm + Python 3.11, built from Debian's archive with
# debootstrap and `docker import`ed, for machines that reach apt/pip but no image registry.
#   docker/make-base.sh [TAG]      (default rayscale-base:bookworm; needs root, debootstrap)
set -euo pipefail
tag=${1:-rayscale-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
root=$(mktemp -d /tmp/rayscale-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3,python3-venv,ca-certificates,procps \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$docker" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "built $tag"
