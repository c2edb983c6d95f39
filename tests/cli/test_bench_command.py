"""`modpipe bench` runs from a source checkout only, and says so elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

import modpipe.cli.bench as bench_command
from modpipe.core.errors import ConfigError


def test_outside_a_source_checkout_it_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_command, "CHECKOUT", tmp_path)
    with pytest.raises(ConfigError, match="source checkout"):
        bench_command.load_bench()


def test_in_this_checkout_it_finds_the_benchmark() -> None:
    assert bench_command.load_bench().__name__ == "bench.triage"
