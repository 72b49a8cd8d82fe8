# modelport: `make quickstart` to see it work, `make test` to check it. Both set up what they need.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup quickstart test lint typecheck unit unit-fast test-containers bench bench-quick lock lock-upgrade clean

setup:
	scripts/setup.sh

quickstart: setup
	$(VENV)/bin/modelport quickstart

test: setup
	scripts/setup.sh --test
	$(MAKE) lint typecheck unit test-containers

lint:
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

typecheck:
	$(PY) -m mypy src tests

unit:
	$(PY) -m pytest -m "not container"

# modelport build for real: podman builds and runs images (about 3 minutes, plus about 2 the first
# time on a machine, for the debootstrap base image scripts/base-image.sh caches in ~/.cache/modelport)
test-containers:
	$(PY) -m pytest -m container

# The inner loop (about a minute): in-process tests only, no real sockets, processes, PostgreSQL
# or browser. `make test` stays the whole suite.
unit-fast: setup
	scripts/setup.sh --frameworks
	$(PY) -m pytest -q -m "not slow and not postgres"

# Side by side with the peers (benchmarks/config.py); writes docs/benchmarks.md and .png.
# Run `bench` on a quiet machine; `bench-quick` is a 2 s-per-case smoke run.
bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quick: setup
	$(PY) benchmarks/run.py --quick $(BENCH_ARGS)

# Installs come from uv.lock (scripts/setup.sh exports it as constraints). After editing pyproject.toml's
# dependencies, `make lock` records the change keeping every other pin; `make lock-upgrade` moves every
# pin to the newest release the ranges allow. Either way: run `make test`, then commit uv.lock.
lock: setup
	$(VENV)/bin/uv lock

lock-upgrade: setup
	$(VENV)/bin/uv lock --upgrade

clean:
	rm -rf $(VENV) .modelport .pytest_cache .mypy_cache .ruff_cache
