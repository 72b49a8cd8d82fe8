#!/usr/bin/env bash
# Sets up everything modelport needs in ./.venv (idempotent).
#   scripts/setup.sh               the Python environment (uv into .venv: the project, the light extras, dev tools)
#   scripts/setup.sh --frameworks  also the model frameworks and cloud clients the tests use: PyTorch (CPU, through
#                                  pip), TensorFlow, XGBoost, LightGBM, boto3, mangum
#   scripts/setup.sh --test        all of that, and what the test suite starts, via apt: PostgreSQL binaries, Chromium,
#                                  Prometheus, podman + runc + debootstrap (image builds), docker-registry, cloud-init
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
MODE=${1:-}
BASE_EXTRAS=sklearn,postgres,jwt,grpc,bench,tracing,sentry,dev
FRAMEWORK_EXTRAS=xgboost,lightgbm,torch,tensorflow,s3,aws

uv_path() {
  local uv
  uv=$(command -v uv || true)
  if [ -z "$uv" ]; then
    if [ ! -x "$VENV/bin/uv" ]; then
      echo "==> installing uv into $VENV" >&2
      "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
    fi
    uv=$VENV/bin/uv
  fi
  echo "$uv"
}

# install EXTRAS STAMP: modelport with EXTRAS into .venv, unless STAMP is newer than pyproject.toml
install() {
  if [ -f "$2" ] && [ ! pyproject.toml -nt "$2" ]; then
    return
  fi
  echo "==> installing modelport and its dependencies ($1) into $VENV"
  "$(uv_path)" pip install --quiet -p "$VENV/bin/python" -e ".[$1]"
  touch "$2"
}

install "$BASE_EXTRAS" "$STAMP"
if [ "$MODE" = "--frameworks" ] || [ "$MODE" = "--test" ]; then
  # PyTorch through pip, which takes the CPU wheel these machines keep on disk (uv would download a
  # CUDA build of several GB); uv then finds it installed.
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "==> installing PyTorch ${TORCH_VERSION:=2.13.0} (CPU) into $VENV"
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  fi
  install "$BASE_EXTRAS,$FRAMEWORK_EXTRAS" "$STAMP-frameworks"
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

if [ "$MODE" = "--test" ]; then
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
