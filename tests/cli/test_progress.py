"""Progress bars go to stderr only when it is a terminal; long work reports its stages."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from modpipe.cli.progress import progress_bars
from modpipe.core.settings import load_settings
from modpipe.stack import stack_up
from tests.conftest import CONFIG


def test_no_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bars() as progress:
        for done in range(5):
            progress("working", done, 5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_bar_on_a_terminal_and_nothing_on_stdout() -> None:
    script = (
        "from modpipe.cli.progress import progress_bars\n"
        "with progress_bars() as p:\n"
        "    for i in range(4): p('fetching jars', i, 3)\n"
        "print('done')\n"
    )
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    run = subprocess.run(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=child,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=60,
    )
    os.close(child)
    chunks = []
    while True:  # everything the child wrote; EOF (or EIO on Linux) once it is all read
        try:
            chunk = os.read(parent, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(parent)
    shown = b"".join(chunks).decode(errors="replace")
    assert run.stdout.decode() == "done\n"  # stdout stays clean for pipes
    assert "fetching jars" in shown and "3/3" in shown


@pytest.mark.integration
def test_stack_up_reports_its_steps_to_the_end() -> None:
    seen: list[tuple[str, int, int | None]] = []
    asyncio.run(stack_up(load_settings(CONFIG), progress=lambda *a: seen.append(a)))
    assert seen[0] == ("starting the local stack", 0, 3)
    assert seen[-1] == ("starting the local stack", 3, 3)
