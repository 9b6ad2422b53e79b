# One-command entry points for a new user. Everything installs itself on first use:
# the virtualenv from pyproject.toml and, when no DATABASE_URL is set, a throwaway
# PostgreSQL 15 + TimescaleDB (deploy/devdb.sh; needs root or sudo once).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint bench db db-stop clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

db: $(STAMP)
	@if [ -z "$$DATABASE_URL$$TEST_DATABASE_URL" ]; then bash deploy/devdb.sh install; fi

## Run the collector on the built-in IG simulator for a minute and show what it stored.
demo: db
	$(BIN)/ig-collector demo $(DEMO_ARGS)

## The whole test suite against a real PostgreSQL + TimescaleDB.
test: db
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Benchmarks: figures and ratios against baselines measured in the same run.
bench: db
	$(BIN)/python -m tests.benchmarks.run

db-stop:
	bash deploy/devdb.sh stop

clean: db-stop
	rm -rf $(VENV) .devdb
