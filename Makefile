# Two commands set everything up on a fresh machine:
#   make train   installs what training needs, then trains parameters.json (local engine)
#   make test    installs what the tests need, then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SNN_DATA_DIR ?=
export SNN_DATA_DIR

.PHONY: train test test-fast test-lowest install install-dev lint bench clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once, and again only when pyproject.toml changes (the package itself is editable).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,deploy]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

train: install
	$(BIN)/snn train $(ARGS)

test: install-dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# All but the slow and the browser tests (docs/testing.md).
test-fast: install-dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow and not browser" $(PYTEST_ARGS)

# The fast tests against the lowest versions pyproject.toml allows (every direct dependency at
# its lower bound, the resolver's lowest-direct mode), in a venv of their own under build/.
LOWEST := build/lowest
UV_VERSION := 0.13.9
test-lowest: install-dev
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'
	rm -rf $(LOWEST)
	$(BIN)/uv venv --quiet --python $(BIN)/python $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	$(LOWEST)/bin/ruff check src tests bench
	$(LOWEST)/bin/python -m pytest -n 2 --dist loadgroup -m "not slow and not browser" $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	VENV_BIN=$(BIN) bash .ci/lint

# The pictures of docs/serve.md, taken by the browser tests of snn serve (Debian's chromium).
screenshots: install-dev
	SNN_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/browser -m browser $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/engines.py $(ARGS)

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache build src/*.egg-info
