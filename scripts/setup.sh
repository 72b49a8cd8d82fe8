#!/usr/bin/env bash
# Sets up everything modelport needs in ./.venv (idempotent).
#   scripts/setup.sh           the Python environment (uv into .venv, project + extras + dev tools)
#   scripts/setup.sh --test    also the services the test suite uses (PostgreSQL binaries via apt)
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
  echo "==> installing modelport and its dependencies into $VENV"
  "$UV" pip install --quiet -p "$VENV/bin/python" -e ".[sklearn,postgres,jwt,grpc,bench,dev]"
  touch "$STAMP"
fi

if [ "${1:-}" = "--test" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "==> installing PostgreSQL (Debian package) for the registry's PostgreSQL tests"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >/dev/null
      apt-get install -y -q --no-install-recommends postgresql >/dev/null
    else
      echo "==> PostgreSQL binaries not found and cannot install them here: PostgreSQL tests will be skipped" >&2
    fi
  fi
fi
