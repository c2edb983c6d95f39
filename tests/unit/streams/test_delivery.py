"""The Faust internals behind bulk delivery: a Faust upgrade that changes them fails here."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import faust
import pytest

from streams.delivery import (
    FAUST_VERSION,
    INTERNALS,
    THREAD_INTERNALS,
    FaustInternalsChanged,
    check_internals,
    install_bulk_delivery,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def consumer(tmp_path: Path) -> Any:
    app = faust.App("delivery-test", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    return app.consumer


def test_the_installed_faust_has_the_internals_delivery_relies_on(consumer: Any) -> None:
    check_internals(consumer)  # raises FaustInternalsChanged, naming what changed


def test_pyproject_pins_the_faust_version_delivery_was_written_for() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"faust-streaming=={FAUST_VERSION}" in deps


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_a_changed_internal_is_refused(consumer: Any, name: str) -> None:
    changed = type("Changed", (type(consumer),), {name: lambda self, *a: None})
    consumer.__class__ = changed
    with pytest.raises(FaustInternalsChanged, match=name):
        check_internals(consumer)


@pytest.mark.parametrize("name", sorted(THREAD_INTERNALS))
def test_a_changed_thread_internal_is_refused(consumer: Any, name: str) -> None:
    thread = consumer._thread
    thread.__class__ = type("Changed", (type(thread),), {name: lambda self, *a: None})
    with pytest.raises(FaustInternalsChanged, match=name):
        check_internals(consumer)


async def test_the_consumer_faust_builds_reads_committed_records_only(consumer: Any) -> None:
    async def handler(fetched: Any) -> None: ...

    install_bulk_delivery(consumer.app, handler)
    kafka_consumer = consumer._thread._create_worker_consumer(consumer.transport)
    try:
        assert kafka_consumer._isolation_level == "read_committed"
    finally:
        await kafka_consumer.stop()
