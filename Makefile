# modelport: `make quickstart` to see it work, `make test` to check it. Both set up what they need.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup quickstart test lint typecheck unit clean

setup:
	scripts/setup.sh

quickstart: setup
	$(VENV)/bin/modelport quickstart

test: setup
	scripts/setup.sh --test
	$(MAKE) lint typecheck unit

lint:
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

typecheck:
	$(PY) -m mypy src

unit:
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .modelport .pytest_cache .mypy_cache .ruff_cache
