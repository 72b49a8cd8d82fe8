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

UV_VERSION=0.13.10  # the uv that reads uv.lock; bump it on purpose, like the lock (docs/dependencies.md)
CONSTRAINTS=$VENV/constraints.txt

uv_path() {
  if [ "$("$VENV/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION" ]; then
    echo "==> installing uv $UV_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  echo "$VENV/bin/uv"
}

# Every install is held to the versions uv.lock names: the lock is exported as a constraints file, so
# a release somebody makes tomorrow changes nothing here until the lock is refreshed on purpose
# (`make lock`). --frozen: a lock out of step with pyproject.toml is an error, not a silent re-resolve.
constraints() {
  if [ ! -f "$CONSTRAINTS" ] || [ uv.lock -nt "$CONSTRAINTS" ] || [ pyproject.toml -nt "$CONSTRAINTS" ]; then
    "$(uv_path)" export --quiet --frozen --all-extras --no-hashes --no-emit-project --no-header \
      --format requirements-txt -o "$CONSTRAINTS"
  fi
}

# install EXTRAS STAMP: modelport with EXTRAS into .venv at the locked versions, unless STAMP is newer
# than pyproject.toml and uv.lock
install() {
  if [ -f "$2" ] && [ ! pyproject.toml -nt "$2" ] && [ ! uv.lock -nt "$2" ]; then
    return
  fi
  constraints
  echo "==> installing modelport and its dependencies ($1) into $VENV, as locked in uv.lock"
  "$(uv_path)" pip install --quiet -p "$VENV/bin/python" -c "$CONSTRAINTS" -e ".[$1]"
  touch "$2"
}

install "$BASE_EXTRAS" "$STAMP"
if [ "$MODE" = "--frameworks" ] || [ "$MODE" = "--test" ]; then
  # PyTorch through pip, which takes the CPU wheel these machines keep on disk (uv would download a
  # CUDA build of several GB); uv then finds it installed.
  # The release is the lock's (pyproject.toml's [tool.uv] constraint keeps it at the one on disk).
  constraints
  TORCH_VERSION=$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' "$CONSTRAINTS" | head -n 1)
  if [ "$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null)" != "$TORCH_VERSION" ]; then
    echo "==> installing PyTorch $TORCH_VERSION (CPU) into $VENV"
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
    # Another apt-get (unattended-upgrades, a second set-up) may hold the dpkg lock: wait for it
    local wait=(-o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-600}")
    if [ -z "${APT_UPDATED:-}" ]; then apt-get "${wait[@]}" update -q >/dev/null; APT_UPDATED=1; fi
    apt-get "${wait[@]}" install -y -q --no-install-recommends "$1" >/dev/null
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
