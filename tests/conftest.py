"""Shared fixtures: settings with unique topics, groups and Redis prefixes per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modpipe.core.settings import Settings, deep_merge, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings() -> MakeSettings:
    """Settings whose topics, groups and Redis prefix are unique to one test."""

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
        return load_settings(CONFIG, deep_merge(unique, overrides))

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A `pytestmark` in a conftest applies to nothing, so mark by folder here:
    # `-m "not integration"` then really leaves out everything that needs Kafka or Redis.
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
