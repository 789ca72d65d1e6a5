# Every task of the project. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: help setup dev demo test test-build system-packages test-rust test-python test-peers lint fmt conformance fuzz bench bench-quick bench-pubsub bench-rust dist python-ft test-wheels clean

help:  ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

SETUP_LOG := $(VENV)/setup.log
# The package with its engine, built in release mode (make demo, make dev).
ENGINE_STAMP := $(VENV)/.engine-built
ENGINE_SOURCES := $(shell find . \( -name target -o -name .venv -o -name .git -o -name fuzz \
	-o -name node_modules \) -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print)
# maturin, in .venv: the package's build backend (keep in step with pyproject's dev extras).
MATURIN := maturin==1.16.0
# $(call logged,COMMAND): COMMAND's output goes to $(SETUP_LOG); shown when it fails.
logged = { $(1); } >>$(SETUP_LOG) 2>&1 || { tail -n 40 $(SETUP_LOG); \
	echo "make: failed: $(1) (all its output: $(SETUP_LOG))"; exit 1; }

$(SETUP_STAMP): pyproject.toml
	@mkdir -p $(VENV) && touch $(SETUP_LOG)
	@$(call logged,test -x $(PY) || python3 -m venv $(VENV))
	@$(call logged,$(PY) -m pip install --upgrade pip '$(MATURIN)')
	@touch $@

setup: $(SETUP_STAMP)  ## Create .venv with pip and maturin (quiet; output in .venv/setup.log)

$(ENGINE_STAMP): $(SETUP_STAMP) $(ENGINE_SOURCES)
	@rm -f $(STALE_ENGINE)
	@$(call logged,VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release)
	@touch $@

# An engine built before the module became abi3 (_wschannel.abi3.so) would be imported
# instead of the new one.
STALE_ENGINE := python/wschannel/_wschannel.cpython-*.so

dev: setup  ## Build the Rust engine into .venv (release mode) with the dev tools
	@rm -f $(STALE_ENGINE)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q -E dev
	@touch $(ENGINE_STAMP) $(DEV_STAMP)

# The engine with the dev tools (pyproject's dev extras), for the targets that need them:
# `make dev` rebuilds whenever asked; these only when the Rust sources or pyproject changed
# since (so make test builds it once, not once per step).
DEV_STAMP := $(VENV)/.dev-built
$(DEV_STAMP): $(SETUP_STAMP) $(ENGINE_SOURCES)
	@$(MAKE) --no-print-directory dev

# Only the package and its engine (no dev tools), and quiet: one line when it sets up or
# rebuilds, else only the demo's own output.
demo:  ## Run the demo: an echo server and a client talking through wschannel
	@if ! $(MAKE) -q --no-print-directory $(ENGINE_STAMP) 2>/dev/null; then \
		if [ -f $(ENGINE_STAMP) ]; then \
			echo "demo: rebuilding the engine, its sources changed (output in $(SETUP_LOG))"; \
		else \
			echo "demo: setting up $(VENV): maturin, then the package and its engine in release mode" \
				"(a few minutes the first time; output in $(SETUP_LOG))"; \
		fi; \
		$(MAKE) -s --no-print-directory $(ENGINE_STAMP); \
	fi
	@$(PY) examples/demo.py

test-rust:  ## Rust: fmt, clippy (with and without features), unit, integration and doc tests, the examples against each other
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	cargo test -q --workspace --all-targets --all-features
	cargo test -q --workspace --doc --all-features
	bash scripts/rust-examples.sh

lint: $(DEV_STAMP)  ## ruff, mypy --strict, the stub check, the import layers (pyproject's importlinter), the crate's rust-version
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest wschannel._wschannel --allowlist stubtest-allowlist.txt
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) scripts/check_msrv.py

test-python: $(DEV_STAMP)  ## pytest over loopback (installs Chromium, Node's ws, Pyodide and wstest first)
	bash tests/interop/setup.sh
	bash tests/browser/setup.sh
	bash tests/proxy/setup.sh
	bash tests/pubsub/setup.sh
	bash compliance/install.sh >/dev/null
	$(PY) -m pytest -q

test-peers: $(DEV_STAMP)  ## The tests that need the peers (Chromium, Node, Pyodide, interop peers, Autobahn's runner): the part the wheel job leaves out
	bash tests/interop/setup.sh
	bash tests/browser/setup.sh
	bash tests/proxy/setup.sh
	bash tests/pubsub/setup.sh
	bash compliance/install.sh >/dev/null
	WSCHANNEL_TEST_PART=peers $(PY) -m pytest -q

# make test's steps (scripts/steps.sh times each: wall and CPU). The suite runs once: its peers
# part in test-peers, the rest against each installed wheel (test-wheels, tests/conftest.py's
# WSCHANNEL_TEST_PART).
#
# The time is CPU on 2 cores (measured: docs/packaging.md, "make test's time"): Autobahn
# alone is about 2,000 CPU seconds (wstest's Python 2), the four wheel suites and the builds
# most of the rest. So the .venv's engine is built first (test-build, which everything after
# uses), then the peers part (its browser, Node and benchmark smoke tests have fixed deadlines
# that a loaded machine misses: at load 20 beside the rest, 13 of them did) with only the
# wheels' build beside it, under nice (dist/, which only the wheel job uses: the peers part
# keeps about one core busy, the build takes the other), then the rest at once in three lanes
# (A+B+C; a lane X,Y,Z runs its steps in turn): Autobahn, which is the longest; the wheel job;
# and the lint, fuzz and Rust checks. The CPU-bound steps that no clock waits on (NICE_STEPS)
# run under nice, so that the tests that wait on timers and Autobahn's pipelines get the CPU
# first and the checks take the rest. The Rust checks come last in their lane: under nice
# they take as long as the others leave them CPU (1,542 s for 90 s of CPU), and lint and
# fuzz after them ended the run 133 s after Autobahn; first, they end long before it.
TEST_STEPS := system-packages test-build test-peers+dist conformance+test-wheels+lint,fuzz,test-rust
NICE_STEPS := test-rust lint dist

# make test builds the engine (the .venv's and the wheels) without whole-program LTO: minutes
# less on 2 cores, the same behaviour; make dev, make bench and make dist alone keep the
# release profile's LTO (Cargo.toml). Its cargo builds share a target folder under
# ~/.cache/wschannel (CARGO_TARGET_DIR, unless set): the dependencies (rustls, tokio, pyo3...)
# are compiled once per machine, not once per clone; the workspace's own crates are always
# compiled again (cargo sees new files). Without incremental compilation, which a build that
# starts from a fresh clone cannot use. mypy keeps its cache there too.
CACHE_DIR ?= $(HOME)/.cache/wschannel
test: export CARGO_PROFILE_RELEASE_LTO := off
test: export CARGO_PROFILE_RELEASE_CODEGEN_UNITS := 16
test: export CARGO_TARGET_DIR ?= $(CACHE_DIR)/cargo-target
test: export CARGO_INCREMENTAL := 0
test: export MYPY_CACHE_DIR ?= $(CACHE_DIR)/mypy-cache
# The wheel job uses the dist/ that the dist step (beside test-peers) made.
test: export WHEELS_REUSE_DIST := 1
# The tests run beside Autobahn and each other: their timeouts stretched (tests/conftest.py),
# as the wheel job's always are.
test: export WSCHANNEL_TEST_TIMEOUT_SCALE ?= 2
test:  ## Everything CI runs (~30 min on a quiet 2-core machine): builds, then Autobahn, the wheel suites and the checks at once (TEST_STEPS)
	@MAKE="$(MAKE)" NICE_STEPS="$(NICE_STEPS)" bash scripts/steps.sh $(TEST_STEPS)

# wstest is installed here, once, not by the two steps after it that use it at once.
test-build: $(DEV_STAMP)  ## What make test's later steps use: the engine in .venv (make dev), wstest
	bash compliance/install.sh >/dev/null

system-packages:  ## Install the Debian packages the tests need (system-packages.txt), saying which and why first
	@bash scripts/system-packages.sh install

bench: dev  ## Benchmarks against picows, websockets, aiohttp, websocket-client (~15 min): benchmarks/results/
	$(PY) -m benchmarks

bench-quick: dev  ## A short benchmark run (under 2 min): benchmarks/results-quick/
	$(PY) -m benchmarks --quick

bench-pubsub: dev  ## Fan-out through Redis and NATS vs one process, 1,000 subscribers (~2 min; tests/pubsub/setup.sh)
	$(PY) -m benchmarks.pubsub

BENCH_RUST_ARGS ?= --seconds 0.5 --reps 5

bench-rust:  ## The Rust crate beside tungstenite and tokio-tungstenite (~4 min): benchmarks/results/rust.md
	mkdir -p benchmarks/results
	cargo run --release -q -p wschannel-bench -- $(BENCH_RUST_ARGS) --out benchmarks/results/rust.md

fmt:  ## Format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format .

FUZZ_SECONDS ?= 15

fuzz:  ## Every cargo-fuzz target for FUZZ_SECONDS each (installs cargo-fuzz the first time; fuzz/README.md)
	bash fuzz/run.sh $(FUZZ_SECONDS)

DIST ?= dist

dist: setup  ## Wheels and sdist into dist/: abi3 (CPython 3.11+), free-threaded 3.13 (builds that Python once), sdist
	rm -rf $(DIST)
	$(VENV)/bin/maturin build --release -q --out $(DIST) --interpreter $(PY)
	$(VENV)/bin/maturin build --release -q --out $(DIST) --interpreter "$$(bash .ci/build-python-ft.sh)"
	$(VENV)/bin/maturin sdist --out $(DIST)
	@ls -l $(DIST)

python-ft:  ## Build free-threaded CPython 3.13 once into ~/.cache/wschannel/python3.13t (apt-get source; says what it installs)
	bash .ci/build-python-ft.sh

test-wheels:  ## make dist, then the test suite against the installed wheels on CPython 3.11, 3.12, 3.13 and 3.13t
	bash .ci/wheels.sh

conformance: $(DEV_STAMP)  ## Autobahn|Testsuite: asyncio and blocking, server and client, against the committed expectations
	$(PY) compliance/run.py

clean:  ## Remove build products
	rm -rf target $(VENV) python/wschannel/*.so
