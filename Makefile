# Croupier: two commands do all the set-up on a fresh machine with Python 3.11+.
#   make run    serve on http://127.0.0.1:8000 with an embedded PostgreSQL and the in-process broker
#   make test   run every test against real PostgreSQL and Redis (embedded unless TEST_*_URL are set)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
USER_ID ?= 42

.PHONY: run test lint fmt dev-initdata schema clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	CROUPIER_DEV=$${CROUPIER_DEV-1} $(BIN)/croupier serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -p no:cacheprovider --cov=server --cov=protocol --cov-report=term:skip-covered \
		--cov-fail-under=85 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check server protocol tests loadtest
	$(BIN)/ruff format --check server protocol tests loadtest
	$(BIN)/mypy

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix server protocol tests loadtest
	$(BIN)/ruff format server protocol tests loadtest

dev-initdata: $(VENV)/.installed-run
	@CROUPIER_DEV=$${CROUPIER_DEV-1} $(BIN)/croupier dev-initdata --user-id $(USER_ID)

schema: $(VENV)/.installed-run
	@$(BIN)/croupier schema

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache *.egg-info
