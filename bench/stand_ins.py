"""The one place bench/ reaches into tests/: the stand-ins a benchmark drives.

The fake servers (the vLLM and OpenAI wire-format servers, which inject faults, and the
DSA transparency database) and the bad-input corpus live under tests/: the project keeps
them there so that nothing on the product's path can depend on them. The GPU-tier figure
(bench/capacity.py), the statements benchmark and the soak need a server to talk to, so
they import it from here and run from a source checkout only, as `modpipe bench` checks
(docs/benchmarks.md). Everything else bench needs comes from the product or bench/.
"""

from __future__ import annotations

try:
    from tests.bad_input_corpus import KINDS, Kind, post_id
    from tests.dsa_database_server import dsa_database_server
    from tests.loopback import serve
    from tests.openai_wire_server import openai_wire_server
    from tests.vllm_wire_server import VllmWireServer
except ImportError as exc:  # an installed modpipe, without its tests/
    raise ImportError(
        "this benchmark drives the test servers under tests/: run it from a source checkout"
    ) from exc

__all__ = [
    "KINDS",
    "Kind",
    "VllmWireServer",
    "dsa_database_server",
    "openai_wire_server",
    "post_id",
    "serve",
]
