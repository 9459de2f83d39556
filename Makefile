# Two commands on a fresh machine: `make demo` (install + main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install prereqs demo test test-serial test-fast lint bench clean browser tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (the wheel on disk), so the project's torch range pulls no CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make demo DEMO_ARGS="--only llm"`: only some areas (see `servecast demo --help`).
demo: install
	$(BIN)/servecast demo $(DEMO_ARGS)

# What the suite needs, side by side: the two venvs' installs (each a torch wheel and its
# dependencies unpacked from disk, one process each) and the browser.
prereqs:
	$(MAKE) -j3 install browser tools

# pytest-xdist: one worker per core, at most 8 (the suite is about 800 CPU s and its costliest
# file about 80 s, so past about 10 workers that file alone sets the wall time, while every
# worker still imports the stack and builds its files' fixtures). Each test file runs on one
# worker (its module fixtures built once); tests/conftest.py starts the costliest files first
# and builds the session fixtures once for all the workers.
XDIST := -n auto --maxprocesses 8 --dist loadfile

test: prereqs
	$(BIN)/python -m pytest -q $(XDIST)

# The same suite in one process (to debug a failure without the workers).
test-serial: prereqs
	$(BIN)/python -m pytest -q

# The fast suite (tests marked slow left out) on the same workers, for the edit-test loop.
test-fast: install
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# The replay tools users point at servecast (pinned GuideLLM and AIPerf), in a venv of
# their own: their dependency pins clash with the project's. The interop tests run them.
TOOLS := .venv-tools
$(TOOLS)/.installed:
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q torch==2.13.0
	$(TOOLS)/bin/pip install -q guidellm==0.8.1 aiperf==0.13.0
	touch $(TOOLS)/.installed

tools: $(TOOLS)/.installed

# Debian's Chromium for the headless-browser tests (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

clean:
	rm -rf $(VENV) servecast.duckdb .pytest_cache
