#!/usr/bin/env bash
# Sets up everything modelport needs in ./.venv (idempotent).
#   scripts/setup.sh           the Python environment (uv into .venv, project + extras + dev tools)
#   scripts/setup.sh --test    also what the test suite uses, via apt: PostgreSQL binaries, Chromium, Prometheus,
#                              podman + runc + debootstrap (image builds) and docker-registry (image pushes)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.modelport-installed

"$PYTHON" - <<'PY' || { echo "modelport needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  UV=$(command -v uv || true)
  if [ -z "$UV" ]; then
    if [ ! -x "$VENV/bin/uv" ]; then
      echo "==> installing uv into $VENV"
      "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
    fi
    UV=$VENV/bin/uv
  fi
  # PyTorch through pip, which takes the CPU wheel these machines keep on disk (uv would download a
  # CUDA build of several GB); uv then finds it installed.
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "==> installing PyTorch ${TORCH_VERSION:=2.13.0} (CPU) into $VENV"
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  fi
  echo "==> installing modelport and its dependencies into $VENV"
  "$UV" pip install --quiet -p "$VENV/bin/python" \
    -e ".[sklearn,xgboost,lightgbm,torch,tensorflow,postgres,jwt,grpc,bench,tracing,sentry,s3,aws,dev]"
  touch "$STAMP"
fi

# apt_install PACKAGE WHAT: the Debian package PACKAGE, needed for WHAT (tests skip without it)
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing $1 (Debian package) for $2"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -q >/dev/null; APT_UPDATED=1; fi
    apt-get install -y -q --no-install-recommends "$1" >/dev/null
  else
    echo "==> $1 not found and cannot install it here (needs root and apt-get): $2 will be skipped" >&2
  fi
}

if [ "${1:-}" = "--test" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql "the registry's PostgreSQL tests"
  command -v chromium >/dev/null || apt_install chromium "the /docs browser test"
  command -v promtool >/dev/null || apt_install prometheus "the monitoring tests (promtool and a real Prometheus)"
  for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || apt_install "$tool" "the container image tests (modelport build)"
  done
  # debootstrap checks Debian's signatures (a Debian machine has the keyring; Ubuntu runners may not)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring "the debootstrap base image"
  command -v docker-registry >/dev/null || apt_install docker-registry "the image push test (modelport build --push)"
  command -v cloud-init >/dev/null || apt_install cloud-init "the VM user-data check (cloud-init schema, modelport deploy vm)"
fi
