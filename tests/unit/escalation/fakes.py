"""Small in-memory stand-ins for the escalation tier's own seams: Provider and VerdictCache.

`MemoryCache` keeps VerdictCache's contract (tests/integration/test_verdict_cache.py runs
the same contract against Redis): `lock` gives a token to one caller at a time, `unlock`
releases only with that token, `wait` returns the verdict once stored, or None once the
lock is gone or the time is up.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from escalation.providers import ProviderVerdict
from modpipe.core.errors import CacheUnavailable, ProviderError


class FakeProvider:
    """Decides by the text ("BLOCK" blocks); each call waits until `gate` is open."""

    name = "fake"
    model = "fake-model"
    paid = False
    fingerprint = "fake-shape"

    def __init__(self, fail_with: ProviderError | None = None) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()  # set once a call is waiting at the gate
        self.fail_with = fail_with

    async def decide(self, text: str) -> ProviderVerdict:
        self.calls.append(text)
        self.entered.set()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        block = "BLOCK" in text
        return ProviderVerdict(
            action="block" if block else "allow",
            categories=["harassment"] if block else [],
            scores={"harassment": 0.9 if block else 0.1},
            rationale="fake",
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.001,
        )

    async def aclose(self) -> None:
        pass


class MemoryCache:
    """VerdictCache's interface on a dict; `down` makes every call fail like Redis down."""

    def __init__(self) -> None:
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, str] = {}
        self.down = False
        self._changed = asyncio.Condition()

    def _check(self) -> None:
        if self.down:
            raise CacheUnavailable("memory cache is down")

    async def get(self, key: str) -> dict[str, Any] | None:
        self._check()
        return self.verdicts.get(key)

    async def put(self, key: str, verdict: dict[str, Any]) -> None:
        self._check()
        self.verdicts[key] = verdict
        async with self._changed:
            self._changed.notify_all()

    async def lock(self, key: str) -> str | None:
        self._check()
        if key in self.locks:
            return None
        self.locks[key] = token = uuid.uuid4().hex
        return token

    lock_ttl_s = 30.0

    async def extend(self, key: str, token: str) -> bool:
        self._check()
        return self.locks.get(key) == token

    async def unlock(self, key: str, token: str) -> None:
        self._check()
        if self.locks.get(key) == token:
            del self.locks[key]
            async with self._changed:
                self._changed.notify_all()

    async def wait(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        self._check()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: key in self.verdicts or key not in self.locks),
                    timeout_s,
                )
            except TimeoutError:
                return None
        return self.verdicts.get(key)

    async def aclose(self) -> None:
        pass
