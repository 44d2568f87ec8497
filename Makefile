# Everything runs from the project venv in .venv, created on demand.
VENV := .venv
PY := $(VENV)/bin/python
REQS_STAMP := $(VENV)/.stamp-requirements-dev
BUILD_STAMP := $(VENV)/.stamp-build
RUST_SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock pyproject.toml

# One interpreter for maturin, `cargo test` and clippy, so pyo3's build
# script doesn't flip between interpreters and force rebuilds.
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: venv build test lint demo bench

venv: $(REQS_STAMP)

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(REQS_STAMP): requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

build: $(BUILD_STAMP)

# `maturin develop` installs python/ in editable mode, so only Rust or
# packaging changes need a rebuild.
$(BUILD_STAMP): $(RUST_SOURCES) $(REQS_STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet
	touch $@

test: build
	cargo test
	$(PY) -m pytest

lint: venv
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check $(wildcard python tests examples bench)
	$(PY) -m mypy --strict python/tenantpool examples tests/typing
	$(PY) -m mypy.stubtest tenantpool._core

# Uses $MONGODB_URI if set, else a throwaway local mongod: examples/quickstart.py, then the FastAPI SaaS
# example under uvicorn with the load test over 200 tenants and the per-tier pool stats.
demo: build
	PY=$(abspath $(PY)) bash scripts/demo.sh

# Starts its own mongod unless $MONGODB_URI is set; writes bench/results/. E.g. BENCH_ARGS=--quick.
bench: build
	$(PY) bench/run.py $(BENCH_ARGS)
