# One entry point: `make run` trains on the local stack, `make test` runs the tests; both bootstrap .venv
# from uv.lock (installing uv with pip when it is missing).
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced
PROBLEM ?= flights
export WHYLOGS_NO_ANALYTICS := True
export PREFECT_CLI_PROMPT := false
export MPLBACKEND := Agg
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: help install run test test-fast lint format bench up down stream-up stream-down staging-up staging-down clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): uv.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@touch $(STAMP)

install: $(STAMP)  ## create .venv from uv.lock

run: $(STAMP)  ## train, evaluate, register and promote on the local stack (PROBLEM=flights by default)
	$(BIN)/flywheel run training --problem $(PROBLEM) $(ARGS)

test: $(STAMP)  ## all tests (unit, integration, slow and e2e)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest tests/unit -q -m "not slow and not e2e"

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## benchmarks: tables and ratios against the issue's baselines
	$(BIN)/python -m benchmarks $(ARGS)

up: $(STAMP)  ## local Prefect server (SQLite), deployments, a worker and the service, for scheduled use
	bash scripts/up.sh

down:  ## stop what `make up` started
	bash scripts/down.sh

stream-up: $(STAMP)  ## Redis (Debian's) and a stream consumer per champion on the local stack
	bash scripts/stream-up.sh

stream-down:  ## stop what `make stream-up` started
	bash scripts/stream-down.sh

staging-up: $(STAMP)  ## staging services here: PostgreSQL, S3 (moto), MLflow server, Prefect server + worker
	bash scripts/staging-up.sh

staging-down:  ## stop the staging services and wipe their state
	bash scripts/staging-down.sh

clean:  ## remove local state (.flywheel) and caches, keep .venv
	rm -rf .flywheel .pytest_cache .mypy_cache .ruff_cache
