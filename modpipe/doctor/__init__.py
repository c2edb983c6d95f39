"""`modpipe doctor`: checks, from the effective settings, each thing a start needs, and
says what to fix in one line each.

Checks run in order and never raise: each gives `Finding`s. `FAIL` means a command
cannot start or work as configured (the doctor exits 1); `warn` means it runs, degraded
or at a risk the line names; `ok` says what was found. Kafka checks (`kafka_checks`):
the connection with the configured security, every topic and its `max.message.bytes`,
the ACLs each command needs. The rest (`service_checks`): Redis roles and eviction
policies, the classifier service, the frontier provider, the console's users, the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from modpipe.core.settings import Settings

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One checked item: its status, what it is, and what was found or what to fix."""

    status: Status
    item: str
    text: str

    def line(self) -> str:
        """The one line the doctor prints for it."""
        return f"{self.status:<4}  {self.item}: {self.text}"


def ok(item: str, text: str) -> Finding:
    """A finding that needs nothing done."""
    return Finding("ok", item, text)


def warn(item: str, text: str) -> Finding:
    """A finding a command runs with, degraded or at a risk the text names."""
    return Finding("warn", item, text)


def fail(item: str, text: str) -> Finding:
    """A finding that stops a command: the text says what to fix."""
    return Finding("FAIL", item, text)


async def run_doctor(settings: Settings) -> list[Finding]:
    """Every finding, in the order the doctor prints them."""
    from modpipe.doctor.kafka_checks import check_kafka
    from modpipe.doctor.service_checks import (
        check_budget,
        check_classifier,
        check_console_users,
        check_provider,
        check_redis,
    )

    findings = await check_kafka(settings)
    redis = await check_redis(settings)
    findings += redis
    findings += await check_classifier(settings)
    findings += await check_provider(settings)
    state_ok = all(f.status != "FAIL" for f in redis if f.item == "redis state")
    review_ok = all(f.status != "FAIL" for f in redis if f.item == "redis review")
    if review_ok:
        findings += await check_console_users(settings)
    if state_ok:
        findings += await check_budget(settings)
    return findings
