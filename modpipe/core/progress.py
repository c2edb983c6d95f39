"""Progress of long work, reported to whoever shows it.

Long operations (the stack's first start, a dataset build, the flywheel, fine-tuning)
take a `Progress` callback and call it as they go; they never print. The roof turns the
calls into progress bars on stderr (modpipe/cli/progress.py), or passes `no_progress`.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int | None], None]
"""(stage, done so far, total or None when unknown): a new stage name starts a new bar."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    """Report nothing."""
