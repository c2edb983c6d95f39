"""Shared fixtures: settings with unique topics, groups and Redis prefixes per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from modpipe.core.kafka import client_options
from modpipe.core.settings import KafkaSettings, Settings, deep_merge, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(request: pytest.FixtureRequest) -> Iterator[MakeSettings]:
    """Settings whose topics, groups and Redis prefix are unique to one test; the test's
    topics are deleted after it, so a whole suite leaves the shared broker as small as it
    found it (thousands of partitions slow it down, and filled its heap once)."""
    made: list[tuple[str, KafkaSettings]] = []

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        unique = {
            "app_id": f"test-triage-{tag}",
            "kafka": {"partitions": 2},
            "topics": {
                "posts": f"t-{tag}-posts",
                "verdicts": f"t-{tag}-verdicts",
                "escalations": f"t-{tag}-escalations",
                "review": f"t-{tag}-review",
                "dlq": f"t-{tag}-dlq",
                "labels": f"t-{tag}-labels",
                "notices": f"t-{tag}-notices",
                "appeals": f"t-{tag}-appeals",
                "statements": f"t-{tag}-statements",
            },
            "appeals": {"group_id": f"test-appeals-{tag}"},
            "statements": {
                "group_id": f"test-statements-{tag}",
                "submit_group_id": f"test-submitter-{tag}",
            },
            "shadow": {"group_id": f"test-shadow-{tag}", "topic": f"t-{tag}-shadow"},
            "escalation": {"group_id": f"test-escalator-{tag}"},
            "redis": {"key_prefix": f"test-{tag}"},
            "delivery": {"final_verdict_ttl_s": 3600},  # the shared Redis forgets tests' posts
            "metrics": {"port": 0, "escalator_port": 0},
            "triage": {"audit_rate": 0.0},
        }
        settings = load_settings(CONFIG, deep_merge(unique, overrides))
        made.append((tag, settings.kafka))
        return settings

    yield make
    if made and "unit" not in request.node.path.parts:
        # In a thread of its own: the test's event loop is pytest-asyncio's to close.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _delete_topics(made)).result()


async def _delete_topics(made: list[tuple[str, KafkaSettings]]) -> None:
    """Delete every topic whose name holds one of the tags, on each tag's broker."""
    for kafka in {id(k): k for _, k in made}.values():
        admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=10_000)
        try:
            await asyncio.wait_for(admin.start(), timeout=5)
            names = await admin.list_topics()
            doomed = [n for n in names if any(tag in n for tag, _ in made)]
            if doomed:
                await admin.delete_topics(doomed)
        except Exception as exc:  # a broker the test stopped: nothing left to clean
            print(f"topics of {[tag for tag, _ in made]} not deleted: {exc!r}")
        finally:
            await admin.close()


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A `pytestmark` in a conftest applies to nothing, so mark by folder here:
    # `-m "not integration"` then really leaves out everything that needs Kafka or Redis.
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadfile`, tests/vllm counts as one file: its session-scoped vLLM
    servers then start on one worker only. (xdist_group marks would say the same, but
    pytest-xdist 3.8 cannot apply them on pytest 9.2, whose items no longer keep `_nodeid`.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesAndVllm(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/vllm" if path.startswith("tests/vllm/") else path

    return FilesAndVllm(config, log)
