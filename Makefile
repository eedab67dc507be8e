# Everything installs into .venv from nothing: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow test-all test-cuda lint demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build; an unpinned resolve would pull CUDA wheels.
	$(PY) -m pip install --disable-pip-version-check -q "torch==2.13.0"
	# Triton's CPU interpreter runs the CUDA kernel in the tests: the version CUDA torch 2.11 ships.
	$(PY) -m pip install --disable-pip-version-check -q "triton==3.6.0"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

# On a machine with a CUDA GPU and a CUDA build of torch (not the CPU build the venv pins).
test-cuda:
	PYTHONPATH=src $(PYTHON) -m pytest -q -m cuda

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

demo: $(STAMP)
	$(VENV)/bin/avsegformer demo

bench: $(STAMP)
	$(PY) bench/forward.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
