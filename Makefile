# Croupier: two commands do all the set-up on a fresh machine with Python 3.11+.
#   make run    serve on http://127.0.0.1:8000 with an embedded PostgreSQL and the in-process broker
#   make test   run every test against real PostgreSQL and Redis (embedded unless TEST_*_URL are set)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
USER_ID ?= 42

.PHONY: run test lint fmt dev-initdata schema webapp clean

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

JS_CLIENT := clients/js

# The JavaScript client's packages (its tests run inside `make test`, tests/clients/): installed when
# npm is on the machine, else its tests are skipped, saying why.
$(JS_CLIENT)/node_modules/.package-lock.json: $(JS_CLIENT)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix $(JS_CLIENT) --no-audit --no-fund --loglevel=error; \
	else echo "npm is not installed: the JavaScript client's tests will be skipped"; fi

# The built client, which the demo Mini App (webapp/) imports: its browser tests (tests/browser/) need it.
$(JS_CLIENT)/dist/index.js: $(JS_CLIENT)/node_modules/.package-lock.json $(wildcard $(JS_CLIENT)/src/*.ts)
	@if [ -d $(JS_CLIENT)/node_modules ]; then npm run build --prefix $(JS_CLIENT) --silent; fi

test: $(VENV)/.installed-dev $(JS_CLIENT)/node_modules/.package-lock.json $(JS_CLIENT)/dist/index.js
	$(BIN)/python -m pytest -p no:cacheprovider --cov=server --cov=protocol --cov-report=term:skip-covered \
		$(if $(strip $(PYTEST_ARGS)),,--cov-fail-under=85) $(PYTEST_ARGS)

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

# The demo Mini App as nginx serves it at /app/ (deploy/nginx.conf): webapp/, the built client in client/ and
# @msgpack/msgpack's ES modules in vendor/msgpack/, the paths the page's import map names.
WEBAPP_OUT ?= .croupier/webapp
webapp: $(JS_CLIENT)/dist/index.js
	rm -rf $(WEBAPP_OUT) && mkdir -p $(WEBAPP_OUT)/client $(WEBAPP_OUT)/vendor/msgpack
	cp webapp/*.html webapp/*.js webapp/*.css $(WEBAPP_OUT)/
	cp $(JS_CLIENT)/dist/*.js $(WEBAPP_OUT)/client/
	cp -r $(JS_CLIENT)/node_modules/@msgpack/msgpack/dist.esm/. $(WEBAPP_OUT)/vendor/msgpack/
	@echo "the Mini App is in $(WEBAPP_OUT)"

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache *.egg-info $(JS_CLIENT)/node_modules $(JS_CLIENT)/dist
