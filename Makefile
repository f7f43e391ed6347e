# Everything a developer or CI runs. `make run` and `make test` are the two
# commands at the top of the README.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Reuse Rust build output across clones and CI runs (release builds are slow).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lectr/target

.PHONY: run install dev test lint test-rust test-py fmt clean stack bench image fuzz fuzz-ci fuzz-tool demo

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## Install the gateway (release build of the Rust core) and start it on SQLite.
run: install
	$(BIN)/lectr serve

## The deploy/compose.yaml topology without containers: PostgreSQL, Redis, two
## gateways behind nginx, Prometheus, on free ports; prints the URLs, Ctrl-C stops.
stack: install
	$(BIN)/python -m devtools.stack

## The gateway image lectr:local from deploy/Dockerfile (docs/deploy.md): from
## local Debian bases, made when missing (LECTR_BASES=hub: the hub images);
## installs docker.io and starts a daemon for the build when none answers.
image:
	deploy/image.sh lectr:local

## The gateway on a local mock provider with a few minutes of generated
## traffic; prints the console URL, the admin token and an org key.
demo: dev
	$(BIN)/python -m devtools.demo

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
	$(BIN)/lint-imports --no-cache

test-rust:
	cargo test -q

test-py: dev
	$(BIN)/pytest -q

## Lint, then every Rust and Python test, then a bounded fuzz run.
test: lint test-rust test-py fuzz-ci

## Coverage-guided fuzzing of the Rust parsers (rust_core/fuzz, cargo fuzz +
## libFuzzer). cargo fuzz needs nightly features; RUSTC_BOOTSTRAP lets the
## stable toolchain build them. New inputs go to a scratch corpus; the seed
## corpus in rust_core/fuzz/corpus/ is only read. A crash leaves its input in
## rust_core/fuzz/artifacts/<target>/ and fails the run.
FUZZ_TARGETS := h1_response sse_framer usage request_peek decide
FUZZ_DIR     := rust_core/fuzz
FUZZ_SCRATCH ?= $(HOME)/.cache/lectr/fuzz-corpus
FUZZ_SECONDS ?= 300
fuzz-tool:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# The fuzz build uses its own target directory: its sanitizer flags would
# otherwise invalidate the shared debug build.
fuzz fuzz-ci: export CARGO_TARGET_DIR := $(HOME)/.cache/lectr/fuzz-target
fuzz fuzz-ci: export RUSTC_BOOTSTRAP := 1

## Fuzz each parser for FUZZ_SECONDS (default 5 min each).
fuzz: fuzz-tool
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_SCRATCH)/$$t && \
		(cd $(FUZZ_DIR) && cargo fuzz run -O $$t $(FUZZ_SCRATCH)/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096) || exit 1; \
	done

## The bounded run of `make test`: 20 s per parser.
fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=20

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
