PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install lint typecheck test test-unit test-stack demo bench stack-up stack-down clean

help:  ## show this help
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/lakehook: setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/lakehook  ## create .venv and install lakehook with its dev tools

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Marquez is part of the local stack (`lakehook stack up` starts it), so its tests always run
# and fail when it is missing. The real-stack fault and outage suites (docs/reliability.md) run
# too; `pytest -m faults` runs only them. PYTEST_FILTER narrows both phases (e.g. "not faults and ").
PYTEST_FILTER ?=

# The stack builds Marquez from its release's source; this repository's sibling shared/vendor
# holds a copy (override with a path or URL).
LAKEHOOK_MARQUEZ_SOURCE ?= $(wildcard $(abspath ../shared/vendor/marquez-0.51.1-src.tar.gz))
export LAKEHOOK_MARQUEZ_SOURCE

# Two phases: every test that shares the stack politely runs in parallel (pytest-xdist; the stack
# tests mostly wait on lakeFS, Trino and the metastore, so more workers than cores pays; the
# outage tests cut a relay between their own server and a service, not the service itself);
# the test that restarts the whole stack (marker `disruptive`) runs alone afterwards.
TEST_WORKERS ?= 4

test: install  ## start the local stack with Marquez (installing it on first use) and run every test
	$(BIN)/lakehook stack up
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations 15 -m "$(PYTEST_FILTER)not disruptive"
	$(BIN)/pytest -m "$(PYTEST_FILTER)disruptive"

test-unit: install  ## fast tests only (no stack)
	$(BIN)/pytest -m "not stack and not marquez"

demo: install  ## the main job on the local stack: sample study in, tables and a query out
	$(BIN)/lakehook demo

bench: install  ## benchmarks; results go to bench/results/
	$(BIN)/python -m bench

stack-up: install
	$(BIN)/lakehook stack up

stack-down: install
	$(BIN)/lakehook stack down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
