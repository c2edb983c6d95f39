"""Start errors a user sees: one `modpipe: ...` line and a non-zero exit, never a quiet
escalator that sends everything to review."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path


def test_a_paid_provider_without_a_key_stops_the_escalator_at_start(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(
        {
            "MODPIPE_ESCALATION__PROVIDER": "chat",
            "MODPIPE_ESCALATION__GROUP_ID": f"test-escalator-{tag}",
            "MODPIPE_REDIS__KEY_PREFIX": f"test-{tag}",
            "MODPIPE_METRICS__ESCALATOR_PORT": "0",
            **{
                f"MODPIPE_TOPICS__{t.upper()}": f"t-{tag}-{t}"
                for t in ("posts", "verdicts", "escalations", "review", "dlq", "labels")
            },
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "modpipe", "escalator", "--idle-exit", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("modpipe: ")]
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0], out.stderr[-2000:]
