# Every task of the project. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: help setup dev demo test test-rust test-python lint fmt conformance fuzz bench bench-quick bench-rust clean

help:  ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(SETUP_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'maturin==1.16.0'
	touch $@

setup: $(SETUP_STAMP)  ## Create .venv with the dev tools

dev: setup  ## Build the Rust engine into .venv (release mode) with the dev tools
	$(VENV)/bin/maturin develop --release -q -E dev

demo: dev  ## Run the demo: an echo server and a client talking through wschannel
	$(PY) examples/demo.py

test-rust:  ## Rust: fmt, clippy (with and without features), unit, integration and doc tests, the examples against each other
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	cargo test -q --workspace --all-targets --all-features
	cargo test -q --workspace --doc --all-features
	bash scripts/rust-examples.sh

lint: dev  ## ruff, mypy --strict, the stub check and the import layers (pyproject's importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest wschannel._wschannel --allowlist stubtest-allowlist.txt
	$(VENV)/bin/lint-imports --no-cache --no-logo

test-python: dev  ## pytest over loopback (installs Chromium, Node's ws and Pyodide first)
	bash tests/interop/setup.sh
	bash tests/browser/setup.sh
	$(PY) -m pytest -q

test: test-rust lint test-python conformance fuzz  ## Everything CI runs

bench: dev  ## Benchmarks against picows, websockets, aiohttp, websocket-client (~15 min): benchmarks/results/
	$(PY) -m benchmarks

bench-quick: dev  ## A short benchmark run (under 2 min): benchmarks/results-quick/
	$(PY) -m benchmarks --quick

BENCH_RUST_ARGS ?= --seconds 0.5 --reps 5

bench-rust:  ## The Rust crate beside tungstenite and tokio-tungstenite (~2 min): benchmarks/results/rust.md
	mkdir -p benchmarks/results
	cargo run --release -q -p wschannel-bench -- $(BENCH_RUST_ARGS) --out benchmarks/results/rust.md

fmt:  ## Format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format .

FUZZ_SECONDS ?= 15

fuzz:  ## Every cargo-fuzz target for FUZZ_SECONDS each (installs cargo-fuzz the first time; fuzz/README.md)
	bash fuzz/run.sh $(FUZZ_SECONDS)

conformance: dev  ## Autobahn|Testsuite: asyncio and blocking, server and client, against the committed expectations
	$(PY) compliance/run.py

clean:  ## Remove build products
	rm -rf target $(VENV) python/wschannel/*.so
