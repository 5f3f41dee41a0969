# Two commands set everything up on a fresh machine:
#   make train   installs what training needs, then trains parameters.json (local engine)
#   make test    installs what the tests need, then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SNN_DATA_DIR ?=
export SNN_DATA_DIR

.PHONY: train test install install-dev lint bench clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,deploy]'

train: install
	$(BIN)/snn train $(ARGS)

test: install-dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

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
