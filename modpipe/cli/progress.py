"""Progress bars for long commands: on stderr only, and only when stderr is a terminal
(tqdm's `disable=None`), so pipes, logs and CI get none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from modpipe.core.progress import Progress


class Bars:
    """A `Progress` shown as one tqdm bar per stage; a new stage closes the last bar."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            self._bar = tqdm(desc=stage, total=total, disable=None, leave=True, dynamic_ncols=True)
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def progress_bars() -> Iterator[Progress]:
    """A `Progress` for the length of a command; its bars end when the block does."""
    bars = Bars()
    try:
        yield bars
    finally:
        bars.close()
