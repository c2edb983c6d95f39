"""Log lines: JSON with the Kafka and post context as fields, and per-record warnings held
to a few per reason per interval."""

from __future__ import annotations

import json
import logging

from modpipe.core.logs import JsonFormatter, PerRecordLimit


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("modpipe.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_context_from_the_message_and_from_extra() -> None:
    line = JsonFormatter().format(
        _record("dead letter topic=%s partition=%d offset=%d reason=%s", "posts", 3, 41, "json")
    )
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "modpipe.test"
    assert entry["message"] == "dead letter topic=posts partition=3 offset=41 reason=json"
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("posts", 3, 41)
    assert "post_id" not in entry  # only where known

    entry = json.loads(JsonFormatter().format(_record("decided", post_id="p-1", topic="t")))
    assert entry["post_id"] == "p-1" and entry["topic"] == "t"


def test_per_record_warnings_pass_a_few_per_reason_per_interval() -> None:
    now = [0.0]
    limit = PerRecordLimit(limit=3, interval_s=60.0, clock=lambda: now[0])
    records = [_record("dead letter %s", i, per_record="json") for i in range(1000)]
    passed = [r for r in records if limit.filter(r)]
    assert len(passed) == 3  # a flood of 1,000 bad records: three lines
    assert limit.filter(_record("x", per_record="schema"))  # another reason has its own count
    assert limit.filter(_record("an ordinary warning"))  # unmarked lines are never held

    now[0] = 61.0  # the next interval: the first line says how many were held back
    nxt = _record("dead letter %s", 1000, per_record="json")
    assert limit.filter(nxt)
    assert nxt.getMessage() == "dead letter 1000 (997 more like it held back: json)"
    follow = _record("dead letter %s", 1001, per_record="json")
    assert limit.filter(follow) and "held back" not in follow.getMessage()
