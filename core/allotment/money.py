"""Money as integer nano-dollars (1e-9 USD), with exact Decimal conversions.

Every stored or summed amount is an ``int`` of nanos; floats never touch money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

NANOS_PER_DOLLAR = 1_000_000_000
_NANO = Decimal(NANOS_PER_DOLLAR)
TOKENS_PER_MILLION = Decimal(1_000_000)


def to_decimal(value: object) -> Decimal:
    """Parse a price or amount exactly; floats are converted through their repr."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # YAML gives floats for "2.50"; repr round-trips the literal the author wrote.
        return Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip().replace("_", "").lstrip("$")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
        if not result.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return result
    raise ValueError(f"not a number: {value!r}")


def dollars_to_nanos(dollars: Decimal | int | str) -> int:
    """Exact USD → nanos, rounded half-even once."""
    return int((to_decimal(dollars) * _NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def nanos_to_dollars(nanos: int) -> Decimal:
    """Exact nanos → USD as a Decimal (no rounding)."""
    return Decimal(nanos) / _NANO


def format_usd(nanos: int, places: int | None = None) -> str:
    """``"$1.545"``-style text; trailing zeros trimmed unless ``places`` is given."""
    value = nanos_to_dollars(nanos)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if places is not None:
        text = f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):,}"
    else:
        text = f"{value.normalize():,f}"
        if "." not in text:
            text += ".00"
        elif len(text.split(".")[1]) < 2:
            text += "0"
    return f"{sign}${text}"


def usd_string(nanos: int) -> str:
    """Plain decimal USD for JSON/CSV (``"0.01155"``), exact, never a float."""
    value = nanos_to_dollars(nanos).normalize()
    text = f"{value:f}"
    return text if text != "-0" else "0"
