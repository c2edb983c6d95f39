"""What the vLLM backends check about the server once, before their first batch.

`GET /version` must name a supported vLLM: the backends send `logprob_token_ids` on
`/v1/completions`, first in vLLM 0.26.0, and `use_activation` on `/classify`; they were
checked against vLLM 0.33.0's source. `GET /v1/models` must list the configured model
and gives its context length (`max_model_len`), which bounds the prompt.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from classifiers.http import VllmHttp
from modpipe.core.errors import ConfigError

log = logging.getLogger(__name__)

OLDEST_SUPPORTED = (0, 26)
NEWEST_CHECKED = (0, 33)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The server's vLLM version and the served model's context length in tokens."""

    version: str
    max_model_len: int


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) of a vLLM version string such as `0.33.0` or `0.34.0rc1.dev5+g1a2b`."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ConfigError(f"vLLM answered /version with {text!r}, not a version")
    return int(match[1]), int(match[2])


async def check_server(http: VllmHttp, model: str) -> ServedModel:
    """The served model, after checking the version; ConfigError when the server cannot
    serve these backends (never retried: a worker stops rather than escalate every post)."""
    version = str((await http.get("/version")).get("version", ""))
    found = parse_version(version)
    oldest = ".".join(map(str, OLDEST_SUPPORTED))
    if found < OLDEST_SUPPORTED:
        raise ConfigError(f"vLLM {version} is too old for modpipe's GPU tier (needs >= {oldest})")
    if found > NEWEST_CHECKED:
        log.warning("vLLM %s is newer than the newest version checked (0.33)", version)
    models = (await http.get("/v1/models")).get("data") or []
    for card in models:
        if isinstance(card, dict) and card.get("id") == model:
            length = card.get("max_model_len")
            if not isinstance(length, int) or length <= 0:
                raise ConfigError(f"vLLM lists {model} without a max_model_len")
            log.info("vLLM %s serves %s with a %d-token context", version, model, length)
            return ServedModel(version, length)
    served = [c.get("id") for c in models if isinstance(c, dict)]
    raise ConfigError(f"vLLM does not serve classifier.model {model!r} (it serves {served})")
