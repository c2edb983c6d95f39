"""How modpipe logs: text or JSON lines on stderr, and per-record warnings rate-limited.

The roof calls `configure_logging` once settings are known; nothing below configures
handlers. Two pieces:

- `JsonFormatter`: one JSON object a line (`time`, `level`, `logger`, `message`, and
  `post_id`, `topic`, `partition`, `offset` where known). A field is known when the call
  passes it in `extra=`, or when the message carries it as `key=value` (the key=value
  context modpipe's log lines already hold), so no log call needs to change for it.
- `PerRecordLimit`: a filter for warnings that one bad record can cause (a dead letter).
  A call marks such a line with `extra={"per_record": reason}`; per reason, the first
  `limit` lines of an interval pass, the rest are counted, and the next line that passes
  says how many like it were held back. A flood of bad input then costs a few lines per
  reason per interval, never one per record (the metrics still count each one).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

CONTEXT_FIELDS = ("post_id", "topic", "partition", "offset")
_CONTEXT = re.compile(r"\b(post_id|topic|partition|offset)=([^\s,;:()]+)")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's Kafka and post context as fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for name, value in _CONTEXT.findall(message):
            entry.setdefault(name, _number(name, value))
        for name in CONTEXT_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _number(name: str, value: str) -> Any:
    if name in ("partition", "offset") and value.lstrip("-").isdigit():
        return int(value)
    return value


class PerRecordLimit(logging.Filter):
    """At most `limit` records per `per_record` reason per `interval_s`; see the module."""

    def __init__(
        self, limit: int, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._limit = limit
        self._interval_s = interval_s
        self._clock = clock
        # reason -> [interval start, passed in it, held back since the last that passed]
        self._reasons: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        reason = record.__dict__.get("per_record")
        if reason is None:
            return True
        now = self._clock()
        state = self._reasons.get(reason)
        if state is None or now - state[0] >= self._interval_s:
            held = state[2] if state else 0
            state = self._reasons[reason] = [now, 0, held]
            if len(self._reasons) > 1024:  # bounded: reasons are few, but never trust that
                self._reasons = {reason: state}
        if state[1] >= self._limit:
            state[2] += 1
            return False
        state[1] += 1
        if state[2]:
            note = f" ({int(state[2])} more like it held back: {reason})".replace("%", "%%")
            record.msg = f"{record.msg}{note}"
            state[2] = 0
        return True


def configure_logging(
    level: str,
    format: Literal["text", "json"] = "text",
    per_record_limit: int = 5,
    per_record_interval_s: float = 60.0,
) -> None:
    """Log to stderr at `level` in `format`, per-record warnings limited; replaces any
    handler configured before (the roof may configure again once settings are read)."""
    handler = logging.StreamHandler()
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(PerRecordLimit(per_record_limit, per_record_interval_s))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
