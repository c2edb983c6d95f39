"""The worker's log on real Kafka: JSON lines with the record's topic, partition and
offset as fields, and a flood of bad records costing a few warning lines, not one each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modpipe.cli.produce import publish
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.settings import Settings

BAD = 60


def settings_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A modpipe process on this test's topics, group and Redis prefix."""
    t = settings.topics
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODPIPE_")}
    return {
        **env,
        "MODPIPE_APP_ID": settings.app_id,
        "MODPIPE_TOPICS__POSTS": t.posts,
        "MODPIPE_TOPICS__VERDICTS": t.verdicts,
        "MODPIPE_TOPICS__ESCALATIONS": t.escalations,
        "MODPIPE_TOPICS__REVIEW": t.review,
        "MODPIPE_TOPICS__DLQ": t.dlq,
        "MODPIPE_TOPICS__LABELS": t.labels,
        "MODPIPE_ESCALATION__GROUP_ID": settings.escalation.group_id,
        "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_METRICS__ESCALATOR_PORT": "0",
        "MODPIPE_TRIAGE__STATE_DIR": str(tmp_path / "faust"),
        **extra,
    }


async def test_json_log_lines_and_a_flood_of_bad_records(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_pipeline_topics(settings)
    good = [json.dumps({"post_id": f"ok-{i}", "text": "hello"}).encode() for i in range(5)]
    bad = [f"not json {i}".encode() for i in range(BAD)]
    await publish(settings.kafka, settings.topics.posts, [*bad, *good])
    env = settings_env(
        settings,
        tmp_path,
        MODPIPE_LOGGING__FORMAT="json",
        MODPIPE_LOGGING__PER_RECORD_LIMIT="3",
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "modpipe",
            "worker",
            "--max-posts",
            str(BAD + 5),
            "--idle-exit",
            "20",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert lines, run.stderr  # every line is one JSON object (json.loads would raise)
    letters = [e for e in lines if e["message"].startswith("dead letter")]
    assert len(letters) == 3, letters  # 60 bad records, three lines
    first = letters[0]
    assert first["level"] == "WARNING" and first["topic"] == settings.topics.posts
    assert isinstance(first["partition"], int) and isinstance(first["offset"], int)
    assert "reason=json" in first["message"]
