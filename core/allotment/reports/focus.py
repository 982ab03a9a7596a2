"""FinOps FOCUS 1.3 cost-and-usage rows: provider x model x token class x price x local day.

A price is the card's for the call's context tier, service tier and batch: ``SkuPriceId`` ends in
``-ondemand``, ``-batch`` or the service tier priced (``-priority``, ``-flex``); ``x_ServiceTier``
is the tier the provider reported serving on (empty when it did not say).

We are not the invoice issuer, so BilledCost is 0 and Effective/List/ContractedCost carry the spend.
The rows are the CSV's cells; ``parquet_bytes`` writes the same rows with an explicit Arrow schema.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.db.ledger import parse_ts
from allotment.errors import InvalidRequest
from allotment.money import usd_string
from allotment.pricing.book import exact_costs, is_batch, unit_prices
from allotment.reports.common import allocate
from allotment.reports.periods import day_start_utc, period_days
from allotment.types import Usage

if TYPE_CHECKING:
    from allotment.runtime import Runtime

FOCUS_VERSION = "1.3"
# token class -> (SKU suffix, meter, TokenDirection, TokenCacheAction)
CLASSES = {
    "input": ("input", "Input Tokens", "Input", "Uncached"),
    "cache_read": ("cache-read", "Cache Read Tokens", "Input", "Read"),
    "cache_write": ("cache-write", "Cache Write Tokens", "Input", "Write"),
    "cache_write_1h": ("cache-write-1h", "Cache Write Tokens (1h)", "Input", "Write"),
    "output": ("output", "Output Tokens", "Output", None),
}
VENDORS = {
    "openai": ("OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Anthropic API"),
    "google": ("Google", "Gemini API"),
    "bedrock": ("Amazon Web Services", "Amazon Bedrock"),
    "ollama": ("Ollama", "Ollama (local)"),
}
MILLION = Decimal(1_000_000)

# The FOCUS columns in export order, each with its Parquet type (export option ``format: parquet``):
# column -> (type, nullable). Money is an exact decimal at the ledger's nano-dollar scale, never a
# float; unit prices (USD per 1M tokens, times a batch multiplier) get a wider scale. Nullable
# exactly where the CSV can be empty.
DECIMAL_PRECISION = 38  # the widest decimal128
SCALES = {"cost": 9, "price": 18, "quantity": 6}  # cost: nano-dollars; quantity: tokens / 1e6
PARQUET_TYPES: dict[str, tuple[str, bool]] = {
    "BilledCost": ("cost", False),
    "EffectiveCost": ("cost", False),
    "ListCost": ("cost", False),
    "ContractedCost": ("cost", False),
    "BillingAccountId": ("string", False),
    "BillingAccountName": ("string", False),
    "BillingAccountType": ("string", False),
    "BillingCurrency": ("string", False),
    "BillingPeriodStart": ("timestamp", False),
    "BillingPeriodEnd": ("timestamp", False),
    "ChargeCategory": ("string", False),
    "ChargeClass": ("string", True),
    "ChargeDescription": ("string", False),
    "ChargeFrequency": ("string", False),
    "ChargePeriodStart": ("timestamp", False),
    "ChargePeriodEnd": ("timestamp", False),
    "ConsumedQuantity": ("count", False),
    "ConsumedUnit": ("string", False),
    "ContractedUnitPrice": ("price", True),
    "ListUnitPrice": ("price", True),
    "PricingCategory": ("string", False),
    "PricingCurrency": ("string", False),
    "PricingCurrencyContractedUnitPrice": ("price", True),
    "PricingCurrencyEffectiveCost": ("cost", False),
    "PricingCurrencyListUnitPrice": ("price", True),
    "PricingQuantity": ("quantity", False),
    "PricingUnit": ("string", False),
    "InvoiceIssuerName": ("string", False),
    "ServiceProviderName": ("string", False),
    "HostProviderName": ("string", False),
    "ProviderName": ("string", False),
    "PublisherName": ("string", False),
    "ServiceCategory": ("string", False),
    "ServiceSubcategory": ("string", False),
    "ServiceName": ("string", False),
    "SubAccountId": ("string", True),
    "SubAccountName": ("string", True),
    "SubAccountType": ("string", True),
    "RegionId": ("string", True),
    "RegionName": ("string", True),
    "ResourceId": ("string", True),
    "ResourceName": ("string", True),
    "ResourceType": ("string", True),
    "SkuId": ("string", False),
    "SkuMeter": ("string", False),
    "SkuPriceId": ("string", False),
    "SkuPriceDetails": ("json", False),
    "CommitmentDiscountCategory": ("string", True),
    "CommitmentDiscountId": ("string", True),
    "CommitmentDiscountName": ("string", True),
    "CommitmentDiscountQuantity": ("quantity", True),
    "CommitmentDiscountStatus": ("string", True),
    "CommitmentDiscountType": ("string", True),
    "CommitmentDiscountUnit": ("string", True),
    "CapacityReservationId": ("string", True),
    "CapacityReservationStatus": ("string", True),
    "AvailabilityZone": ("string", True),
    "InvoiceId": ("string", True),
    "Tags": ("json", False),
    "x_RateCardVersion": ("string", False),
    "x_RequestCount": ("count", False),
    "x_Enforced": ("bool", False),
    "x_WorkflowId": ("string", True),
    "x_EndpointMode": ("string", False),
    "x_ServiceTier": ("string", True),
}
COLUMNS = tuple(PARQUET_TYPES)


@dataclass
class _Row:
    tokens: int = 0
    cost: int = 0
    requests: int = 0
    unit_price: Decimal | None = None
    tier: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _event_rows(rt: Runtime, start: datetime, end: datetime) -> Any:
    sql = text(
        "SELECT ts, kind, team_id, cost_center, provider, model, endpoint_mode, input_tokens, "
        "cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, cost_nanos, "
        "card_version, enforced, labels, service_tier FROM usage_events "
        "WHERE ts >= :t0 AND ts < :t1 ORDER BY id"
    )
    with rt.engine.connect() as conn:
        yield from conn.execute(sql, {"t0": rt.ledger.ts(start), "t1": rt.ledger.ts(end)})


def focus_rows(rt: Runtime, period: str) -> list[dict[str, Any]]:
    """The FOCUS rows of ``period``; their EffectiveCost sums to the ledger's spend exactly."""
    tz = rt.directory.timezone
    first, after = period_days(period)
    start, end = day_start_utc(first, tz), day_start_utc(after, tz)
    book = rt.rate_book
    groups: dict[tuple[Any, ...], _Row] = defaultdict(_Row)
    for r in _event_rows(rt, start, end):
        ts = parse_ts(r[0])
        usage = Usage(
            input_tokens=int(r[7]),
            cache_read_tokens=int(r[8]),
            cache_write_tokens=int(r[9]),
            cache_write_1h_tokens=int(r[10]),
            output_tokens=int(r[11]),
            service_tier=r[16],
        )
        mode = str(r[6])
        counts = {
            "input": usage.input_tokens,
            "cache_read": usage.cache_read_tokens,
            "cache_write": usage.cache_write_tokens,
            "cache_write_1h": usage.cache_write_1h_tokens,
            "output": usage.output_tokens,
        }
        resolution = book.find(str(r[4]), str(r[5]), ts)
        prices: dict[str, Decimal | None] = dict.fromkeys(CLASSES)
        tier = None
        batch = is_batch(mode, usage.service_tier)
        variant = "batch" if batch else "ondemand"
        if resolution is not None:
            exact = exact_costs(resolution.rates, usage, mode)
            unit = unit_prices(resolution.rates, usage.total_input_tokens, usage.service_tier)
            multiplier = resolution.rates.batch if batch else Decimal(1)
            prices = {c: getattr(unit, c) * multiplier for c in CLASSES}
            tier = unit.tier
            if unit.service_tier is not None:  # priced on this tier (not standard for want of a price)
                variant = unit.service_tier if not batch else f"{unit.service_tier}-batch"
            weights = {c: int(exact[c] * 10**15) for c in CLASSES}
        else:
            weights = dict(counts)
        if not any(weights.values()):
            weights = dict(counts)
        # the ledger's rounded cost is split over the classes so rows sum to it exactly
        shares = allocate(int(r[12]), weights)
        day = ts.astimezone(tz).date()
        labels = orjson.loads(r[15]) if r[15] else {}
        tag_key = orjson.dumps(
            {"team": r[2], "cost_center": r[3], **labels}, option=orjson.OPT_SORT_KEYS
        ).decode()
        for cls, tokens in counts.items():
            if not tokens and not shares[cls]:
                continue
            key = (
                day,
                str(r[4]),
                str(r[5]),
                cls,
                mode,
                tier,
                str(r[13]),
                str(r[1]),
                tag_key,
                bool(r[14]),
                variant,
                usage.service_tier,
            )
            row = groups[key]
            row.tokens += tokens
            row.cost += shares[cls]
            row.requests += 1
            row.unit_price = prices[cls]
    billing = (_iso(start), _iso(end))
    org = rt.directory.config.org.name if rt.directory.config else "default"
    return [
        _focus_row(key, row, billing, org, rt.directory.org_id, tz)
        for key, row in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    ]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if v is None else str(v) for v in key)


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _focus_row(
    key: tuple[Any, ...], row: _Row, billing: tuple[str, str], org: str, org_id: str, tz: Any
) -> dict[str, Any]:
    day, provider, model, cls, mode, tier, card, kind, tag_key, enforced, priced_as, served = key
    suffix, meter, direction, cache_action = CLASSES[cls]
    vendor, service = VENDORS.get(provider, (provider.title(), f"{provider.title()} API"))
    variant = priced_as + (f"-above-{tier}" if tier is not None else "")
    tags = {k: v for k, v in orjson.loads(tag_key).items() if v is not None}
    cost = usd_string(row.cost)
    unit = None if row.unit_price is None else _dec(row.unit_price)
    details: dict[str, Any] = {"ModelId": model, "ModelDeveloper": vendor, "TokenDirection": direction}
    if cache_action:
        details["TokenCacheAction"] = cache_action
    if mode == "batch" or priced_as.endswith("batch"):
        details["x_Batch"] = True
    if served is not None:
        details["x_ServiceTier"] = served
    if tier is not None:
        details["x_AboveInputTokens"] = tier
    if cls == "cache_write_1h":
        details["x_CacheTtl"] = "1h"
    day_start = day_start_utc(day, tz)
    workflow = next((tags[k] for k in ("feature", "agent", "workflow") if tags.get(k)), None)
    return {
        "BilledCost": "0",
        "EffectiveCost": cost,
        "ListCost": cost,
        "ContractedCost": cost,
        "BillingAccountId": org_id,
        "BillingAccountName": org,
        "BillingAccountType": "Organization",
        "BillingCurrency": "USD",
        "BillingPeriodStart": billing[0],
        "BillingPeriodEnd": billing[1],
        "ChargeCategory": "Usage",
        "ChargeClass": "Correction" if kind == "correction" else None,
        "ChargeDescription": f"{model} {meter.lower()}",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": _iso(day_start),
        "ChargePeriodEnd": _iso(day_start_utc(day + timedelta(days=1), tz)),
        "ConsumedQuantity": row.tokens,
        "ConsumedUnit": "Tokens",
        "ContractedUnitPrice": unit,
        "ListUnitPrice": unit,
        "PricingCategory": "Standard",
        "PricingCurrency": "USD",
        "PricingCurrencyContractedUnitPrice": unit,
        "PricingCurrencyEffectiveCost": cost,
        "PricingCurrencyListUnitPrice": unit,
        "PricingQuantity": _dec(Decimal(row.tokens) / MILLION),
        "PricingUnit": "1000000 Tokens",
        "InvoiceIssuerName": vendor,
        "ServiceProviderName": vendor,
        "HostProviderName": vendor,
        "ProviderName": vendor,
        "PublisherName": vendor,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceSubcategory": "Generative AI",
        "ServiceName": service,
        "SubAccountId": tags.get("team"),
        "SubAccountName": tags.get("team"),
        "SubAccountType": "Team" if tags.get("team") else None,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": None,
        "ResourceName": None,
        "ResourceType": None,
        "SkuId": f"{model}-{suffix}",
        "SkuMeter": meter,
        "SkuPriceId": f"{model}-{suffix}-{variant}",
        "SkuPriceDetails": orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode(),
        "CommitmentDiscountCategory": None,
        "CommitmentDiscountId": None,
        "CommitmentDiscountName": None,
        "CommitmentDiscountQuantity": None,
        "CommitmentDiscountStatus": None,
        "CommitmentDiscountType": None,
        "CommitmentDiscountUnit": None,
        "CapacityReservationId": None,
        "CapacityReservationStatus": None,
        "AvailabilityZone": None,
        "InvoiceId": None,
        "Tags": orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode(),
        "x_RateCardVersion": card,
        "x_RequestCount": row.requests,
        "x_Enforced": enforced,
        "x_WorkflowId": workflow,
        "x_EndpointMode": mode,
        "x_ServiceTier": served,
    }


def _dec(value: Decimal) -> str:
    text_value = f"{value.normalize():f}"
    return "0" if text_value in ("-0", "0") else text_value


def metadata(rt: Runtime, period: str, rows: int, closed: bool) -> dict[str, Any]:
    """Dataset metadata: version, generator, and the billing period's status."""
    tz = rt.directory.timezone
    first, after = period_days(period)
    return {
        "FocusVersion": FOCUS_VERSION,
        "DataGenerator": "allotment",
        "Dataset": "CostAndUsage",
        "BillingPeriodStart": _iso(day_start_utc(first, tz)),
        "BillingPeriodEnd": _iso(day_start_utc(after, tz)),
        "BillingPeriodStatus": "Closed" if closed else "Open",
        "Rows": rows,
        "Showback": "BilledCost is 0: allotment does not issue invoices; use EffectiveCost",
        "CreatedAt": _iso(datetime.now(tz=day_start_utc(first, tz).tzinfo)),
    }


def is_closed(rt: Runtime, period: str, today: date | None = None) -> bool:
    from allotment.reports.periods import local_today

    _, after = period_days(period)
    return (today or local_today(rt.directory.timezone)) >= after


def require_pyarrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or a clear error naming the extra that installs them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InvalidRequest(
            "the parquet format needs pyarrow: pip install 'allotment[parquet]' (or use format csv)"
        ) from None
    return pyarrow, pyarrow.parquet


def arrow_schema() -> Any:
    """The explicit Arrow schema of the Parquet export (see ``PARQUET_TYPES``)."""
    pa, _ = require_pyarrow()
    types = {
        **{kind: pa.decimal128(DECIMAL_PRECISION, scale) for kind, scale in SCALES.items()},
        "count": pa.int64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "bool": pa.bool_(),
        "string": pa.string(),
        "json": pa.string(),  # JSON text, as in the CSV
    }
    return pa.schema(
        [pa.field(name, types[kind], nullable=nullable) for name, (kind, nullable) in PARQUET_TYPES.items()]
    )


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    """The rows (the CSV's cells) as a Parquet file: the same columns, order and values, typed."""
    pa, pq = require_pyarrow()
    schema = arrow_schema()
    arrays = [
        pa.array([_arrow_value(name, PARQUET_TYPES[name][0], row[name]) for row in rows], type=column.type)
        for name, column in zip(schema.names, schema, strict=True)
    ]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink)
    return sink.getvalue()


def _arrow_value(column: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind in SCALES:
        number = Decimal(str(value))
        scale = SCALES[kind]
        _, digits, exponent = number.as_tuple()
        if (
            not isinstance(exponent, int)
            or -exponent > scale
            or len(digits) + exponent > DECIMAL_PRECISION - scale
        ):
            # never rounded: an exact value the schema cannot hold is refused
            raise InvalidRequest(
                f"{column} {value} does not fit decimal({DECIMAL_PRECISION}, {scale}) exactly; use format csv"
            )
        return number
    if kind == "count":
        return int(value)
    if kind == "timestamp":
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if kind == "bool":
        return bool(value)
    return str(value)
