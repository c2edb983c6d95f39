# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it
# needs: a .venv with the project, redis-server (apt-get), the Kafka jars (Maven, on first
# `modpipe stack up`).
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install redis-server stack-up stack-down demo test test-unit lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,eval]'
	touch $@

install: $(VENV)/.installed

redis-server:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }

stack-up: install redis-server
	$(BIN)/modpipe stack up

stack-down: install
	$(BIN)/modpipe stack down

demo: stack-up
	$(BIN)/modpipe demo

test: stack-up
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

SOURCES := modpipe streams classifiers escalation configs tests bench

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: stack-up
	$(BIN)/modpipe bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
