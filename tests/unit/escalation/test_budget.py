"""The daily budget without Redis: reservations settle against the day they were made."""

from __future__ import annotations

import pytest

from escalation import budget as budget_module
from escalation.budget import Budget
from modpipe.core.errors import BudgetExhausted


async def test_a_settlement_after_midnight_goes_to_the_reservations_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budget_module, "_today", lambda: "2026-11-29")
    budget = Budget(1.0)
    reserved = await budget.reserve(0.8)
    monkeypatch.setattr(budget_module, "_today", lambda: "2026-11-30")
    await budget.settle(reserved, 0.3)
    assert await budget.spent() == 0.0  # the new day owes nothing; no negative carry-over
    monkeypatch.setattr(budget_module, "_today", lambda: "2026-11-29")
    assert await budget.spent() == pytest.approx(0.3)


async def test_reservations_stop_at_the_cap() -> None:
    budget = Budget(1.0)
    first = await budget.reserve(0.6)
    await budget.reserve(0.6)  # granted: the total was under the cap when asked
    with pytest.raises(BudgetExhausted):
        await budget.reserve(0.1)
    await budget.settle(first, 0.0)
    await budget.reserve(0.1)  # a failed call's reservation is given back
