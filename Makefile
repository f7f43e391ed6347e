# Everything a developer or CI runs. `make run` and `make test` are the two
# commands at the top of the README.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Reuse Rust build output across clones and CI runs (release builds are slow).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lectr/target

.PHONY: run install dev test lint test-rust test-py fmt clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## Install the gateway (release build of the Rust core) and start it on SQLite.
run: install
	$(BIN)/lectr serve

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
