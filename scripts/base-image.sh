#!/usr/bin/env bash
# A minimal Debian base with Python for the container tests, made once and cached: no image can be
# pulled on the test machines, so `modelport build` is tested with --base-image localhost/py311-base:bookworm.
#   scripts/base-image.sh          make the rootfs tarball (debootstrap, ~2 min) unless cached, import it into podman
# Needs root, debootstrap and podman (scripts/setup.sh --test installs them). The tarball is kept in
# ${MODELPORT_CACHE:-~/.cache/modelport}/base so later runs on the same machine skip debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${BASE_IMAGE:-localhost/py311-base:bookworm}
CACHE=${MODELPORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelport}
TARBALL=$CACHE/base/py311-base-bookworm.tar
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/containers/containers.conf}

if podman image exists "$IMAGE"; then
  exit 0
fi
if [ ! -s "$TARBALL" ]; then
  mkdir -p "$(dirname "$TARBALL")"
  ROOTFS=$(mktemp -d)
  trap 'rm -rf "$ROOTFS"' EXIT
  echo "==> debootstrap: a minimal Debian bookworm with Python 3.11 (about 2 minutes, once)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" http://deb.debian.org/debian >"$CACHE/base/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; see $CACHE/base/debootstrap.log" >&2; exit 1; }
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi
echo "==> importing $TARBALL as $IMAGE"
podman import --quiet "$TARBALL" "$IMAGE" >/dev/null
