"""The Faust internals behind bulk delivery: a Faust upgrade that changes them fails here."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import faust
import pytest

from streams.delivery import FAUST_VERSION, INTERNALS, FaustInternalsChanged, check_internals

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
