# Everything installs into .venv from nothing: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.installed-browser
# The system's Chromium (Debian: apt-get install chromium); Playwright never downloads one.
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv test test-slow test-all test-cuda test-browser lint demo serve bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build; an unpinned resolve would pull CUDA wheels.
	$(PY) -m pip install --disable-pip-version-check -q "torch==2.13.0"
	# Triton's CPU interpreter runs the CUDA kernel in the tests: the version CUDA torch 2.11 ships.
	$(PY) -m pip install --disable-pip-version-check -q "triton==3.6.0"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev,web]"
	touch $(STAMP)

$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev,web,browser]"
	touch $(BROWSER_STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

# The page of `avsegformer serve` in a real headless Chromium (the system's: $(CHROMIUM)).
test-browser: $(BROWSER_STAMP)
	@test -x $(CHROMIUM) || { echo "test-browser needs Chromium at $(CHROMIUM): apt-get install chromium (or make test-browser CHROMIUM=/path/to/chromium)"; exit 2; }
	AVSEGFORMER_CHROMIUM=$(CHROMIUM) AVSEGFORMER_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m browser tests/test_serve_browser.py

# On a machine with a CUDA GPU and a CUDA build of torch (not the CPU build the venv pins).
test-cuda:
	PYTHONPATH=src $(PYTHON) -m pytest -q -m cuda

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

demo: $(STAMP)
	$(VENV)/bin/avsegformer demo

serve: $(STAMP)
	$(VENV)/bin/avsegformer serve

bench: $(STAMP)
	$(PY) bench/forward.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
