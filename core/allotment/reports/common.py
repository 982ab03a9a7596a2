"""Small helpers shared by reports: percentages, exact allocation, money fields, budgets.

Money stays integer nanos; every JSON amount is given as nanos and as an exact USD string.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from allotment.money import usd_string

if TYPE_CHECKING:
    from allotment.runtime import Runtime

NEAR_LIMIT = Decimal("0.9")  # the brief's example: 85% is on track, 91% is near limit


def percent(part: int, whole: int, places: str = "0.1") -> str | None:
    """``part / whole`` as a percentage string rounded half-even, or None when ``whole`` is 0."""
    if not whole:
        return None
    return str((Decimal(part) * 100 / Decimal(whole)).quantize(Decimal(places), ROUND_HALF_EVEN))


def ratio(part: int | Decimal, whole: int | Decimal, places: str = "0.0001") -> str | None:
    if not whole:
        return None
    return str((Decimal(part) / Decimal(whole)).quantize(Decimal(places), ROUND_HALF_EVEN))


def change_percent(current: int, previous: int) -> str | None:
    return None if not previous else percent(current - previous, previous)


def money(prefix: str, nanos: int) -> dict[str, Any]:
    return {f"{prefix}_nanos": nanos, f"{prefix}_usd": usd_string(nanos)}


def allocate(amount: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``amount`` nanos by ``weights`` exactly (largest remainder; ties by name)."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive or amount == 0:
        return {k: 0 for k in weights}
    whole = sum(positive.values())
    shares = {k: amount * w // whole for k, w in positive.items()}
    left = amount - sum(shares.values())
    order = sorted(positive, key=lambda k: (-(amount * positive[k] % whole), k))
    for k in order[:left]:
        shares[k] += 1
    return {k: shares.get(k, 0) for k in weights}


def budget_status(spent: int, budget: int | None) -> str:
    if budget is None:
        return "no budget"
    if spent > budget or (budget == 0 and spent > 0):
        return "over"
    if budget and Decimal(spent) >= Decimal(budget) * NEAR_LIMIT:
        return "near limit"
    return "on track"


def wallet_limits(rt: Runtime, period: str) -> dict[tuple[str, str], int]:
    """The limits the wallets of ``period`` actually had, by (scope, scope_id)."""
    with rt.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT scope, scope_id, limit_nanos FROM wallets WHERE period = :p"), {"p": period}
        )
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def tokens(fact: Mapping[str, Any]) -> int:
    return int(
        fact["input_tokens"] + fact["cache_read_tokens"] + fact["cache_write_tokens"] + fact["output_tokens"]
    )


def add_metrics(into: dict[str, Any], fact: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        into[name] = into.get(name, 0) + int(fact[name])
