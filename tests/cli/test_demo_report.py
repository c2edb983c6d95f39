"""`modpipe demo` prints its report clean: the malformed posts it sends on purpose are
counted in the report, not logged one warning each."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the local stack's Kafka and Redis


def test_demo_report_has_no_warning_per_dead_letter(tmp_path: Path) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODPIPE_")}
    env.update(
        {
            f"MODPIPE_TOPICS__{name.upper()}": f"{tag}-{name}"
            for name in ("posts", "verdicts", "escalations", "review", "dlq", "labels")
        }
    )
    env.update(
        MODPIPE_APP_ID=f"{tag}-triage",
        MODPIPE_ESCALATION__GROUP_ID=f"{tag}-escalator",
        MODPIPE_REDIS__KEY_PREFIX=tag,
        MODPIPE_METRICS__PORT="0",
        MODPIPE_METRICS__ESCALATOR_PORT="0",
        MODPIPE_TRIAGE__STATE_DIR=str(tmp_path / "faust"),
    )
    run = subprocess.run(
        [sys.executable, "-m", "modpipe", "demo", "--posts", "800"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    letters = next(line for line in run.stdout.splitlines() if line.startswith("dead letters"))
    assert int(letters.split()[-1]) > 0  # the demo did send malformed posts
    assert "dead letter topic=" not in output, output[-3000:]
    assert " WARNING " not in output, output[-3000:]
