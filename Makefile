# Everything a developer or CI runs. `make run` and `make test` are the two
# commands at the top of the README.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Reuse Rust build output across clones and CI runs (release builds are slow).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lectr/target

.PHONY: run install dev test lint test-rust test-py fmt clean stack bench demo

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## Install the gateway (release build of the Rust core) and start it on SQLite.
run: install
	$(BIN)/lectr serve

## The deploy/compose.yaml topology without containers: PostgreSQL, Redis, two
## gateways behind nginx, Prometheus, on free ports; prints the URLs, Ctrl-C stops.
stack: install
	$(BIN)/lectr dev-stack

## The gateway on a local mock provider with a few minutes of generated
## traffic; prints the console URL, the admin token and an org key.
demo: dev
	$(BIN)/lectr demo

install: $(BIN)/python
	$(BIN)/pip install -q .

## Development install: test tools plus a debug build of the Rust core.
dev: $(BIN)/python
	$(BIN)/pip install -q 'maturin>=1.9,<2'
	$(BIN)/maturin develop -q --extras test

lint: dev
	cargo fmt --all --check
	cargo clippy --all-targets -q -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-rust:
	cargo test -q

test-py: dev
	$(BIN)/pytest -q

## Lint, then every Rust and Python test.
test: lint test-rust test-py

fmt: dev
	cargo fmt --all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks: Lectr (a release build in its own venv) side by side with direct,
## nginx and LiteLLM; installs what is missing, writes benchmarks/results/<date>/
## and the table in benchmarks/README.md (~20 min).
BENCH_VENV ?= $(HOME)/.cache/lectr/bench-venv
bench:
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q '.[bench]'
	$(BENCH_VENV)/bin/python -m benchmarks --full

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
