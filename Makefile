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
# The extension is built for the stable ABI (`_core.abi3.so`, see pyproject.toml): a `_core.cpython-*.so`
# left by an older build would shadow it (Python prefers the interpreter-specific name), so remove it.
$(BUILD_STAMP): $(RUST_SOURCES) $(REQS_STAMP)
	rm -f python/tenantpool/_core.cpython-*.so
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

# ---- Packaging and documentation ----------------------------------------------------------------
.PHONY: wheel wheel-test docs lint-abi3

# The wheel's build: the stable ABI (abi3-py39) leaves some PyO3 APIs out, so lint that variant too.
lint-abi3: venv
	cargo clippy --all-targets --features abi3 -- -D warnings

# The release wheel and the sdist, into dist/. One abi3 wheel (cp39-abi3: every CPython from 3.9 on);
# it reuses `make build`'s compiled artifacts (same features, same profile), so after it this is quick.
wheel: $(REQS_STAMP)
	rm -f dist/tenantpool-*
	$(VENV)/bin/maturin build --release --out dist
	$(VENV)/bin/maturin sdist --out dist

# Installs dist/'s wheel (not editable) into clean CPython 3.9 and 3.13 venvs (oldest and newest
# declared pymongo) and runs scripts/wheel_smoke.py in each against its own throwaway mongod.
wheel-test: wheel
	$(PY) scripts/wheel_test.py

# The documentation site (mkdocs, material, mkdocstrings) into site/; warnings are errors.
docs: $(REQS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
