"""FOCUS and CSV exports through the export hook: required columns, exact sums, Parquet, S3 via moto."""

from __future__ import annotations

import csv
import io
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from allotment.errors import InvalidRequest
from allotment.reports.focus import COLUMNS, focus_rows, parquet_bytes
from allotment.runtime import Runtime

from .seed import Ev, in_july

# FOCUS 1.3 Cost and Usage: every Mandatory column, and the Conditional ones we fill
MANDATORY = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "PricingQuantity",
    "PricingUnit",
    "ServiceCategory",
    "ServiceName",
    "InvoiceIssuerName",
    "ServiceProviderName",
    "HostProviderName",
)
CONDITIONAL = (
    "ConsumedQuantity",
    "ConsumedUnit",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SkuPriceDetails",
    "Tags",
    "SubAccountId",
)


def _focus(rt: Runtime, tmp_path: Path) -> list[dict[str, str]]:
    result = rt.hooks.export("focus", "2026-07", {"destination": str(tmp_path)})
    assert result is not None
    text = (tmp_path / "focus-2026-07.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert result.rows == len(rows)
    return rows


def test_focus_has_every_required_column_and_billed_cost_zero(seeded: Runtime, tmp_path: Path) -> None:
    rows = _focus(seeded, tmp_path)
    header = list(rows[0])
    assert header == list(COLUMNS)
    for column in MANDATORY + CONDITIONAL:
        assert column in header, column
    for row in rows:
        assert row["BilledCost"] == "0"  # we do not issue the invoice (the BilledCost rule)
        assert row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"]
        assert row["ChargeCategory"] == "Usage" and row["ChargeFrequency"] == "Usage-Based"
        assert row["BillingCurrency"] == row["PricingCurrency"] == "USD"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["PricingUnit"] == "1000000 Tokens" and row["ConsumedUnit"] == "Tokens"
        assert Decimal(row["PricingQuantity"]) * 1_000_000 == int(row["ConsumedQuantity"])
        assert row["BillingPeriodStart"] == "2026-07-01T04:00:00Z"  # New York midnight
        assert row["BillingPeriodEnd"] == "2026-08-01T04:00:00Z"
        assert row["ChargePeriodStart"].endswith("04:00:00Z") and row["ChargePeriodEnd"].endswith("04:00:00Z")
        for column in ("Tags", "SkuPriceDetails"):
            assert isinstance(orjson.loads(row[column]), dict)
        for column in MANDATORY:
            if column != "ChargeClass":  # null for ordinary usage rows
                assert row[column] != "", column
    meta = orjson.loads((tmp_path / "focus-2026-07.metadata.json").read_bytes())
    assert meta["FocusVersion"] == "1.3" and meta["BillingPeriodStatus"] == "Closed"


def test_focus_rows_split_token_classes_and_sum_to_the_ledger(
    seeded: Runtime, events: list[Ev], tmp_path: Path
) -> None:
    july = [e for e in events if in_july(e)]
    rows = _focus(seeded, tmp_path)
    assert sum(Decimal(r["EffectiveCost"]) for r in rows) * 10**9 == sum(e.cost for e in july)
    tokens: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        tokens[(r["SkuId"], r["SkuPriceId"].rsplit("-", 1)[-1])] += int(r["ConsumedQuantity"])
    mini_cached = sum(e.usage.cache_read_tokens for e in july if e.model == "gpt-5.4-mini")
    assert tokens[("gpt-5.4-mini-cache-read", "ondemand")] == mini_cached == 240_000
    assert tokens[("gpt-5.4-mini-input", "ondemand")] == sum(
        e.usage.input_tokens for e in july if e.model == "gpt-5.4-mini"
    )
    batch_in = sum(e.usage.input_tokens for e in july if e.mode.value == "batch")
    assert tokens[("claude-sonnet-4-input", "batch")] == batch_in == 40_000
    # a support-copilot cache-read row: unit price 0.075 $/1M, tagged with the team and labels
    row = next(r for r in rows if r["SkuId"] == "gpt-5.4-mini-cache-read")
    assert row["ListUnitPrice"] == "0.075"
    assert Decimal(row["EffectiveCost"]) == Decimal(row["ConsumedQuantity"]) * Decimal("0.075") / 1_000_000
    assert orjson.loads(row["Tags"]) == {
        "cost_center": "CC-SUP-001",
        "environment": "prod",
        "feature": "support-copilot",
        "team": "support",
    }
    assert orjson.loads(row["SkuPriceDetails"])["TokenCacheAction"] == "Read"
    assert row["x_WorkflowId"] == "support-copilot" and row["x_RateCardVersion"] == "openai-2026-06-08"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 with an empty ``finance`` bucket, for exports to ``s3://finance/...``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="finance")
        yield client


def test_finance_csv_export_to_s3_with_moto(seeded: Runtime, events: list[Ev], s3: Any) -> None:
    result = seeded.hooks.export("csv", "2026-07", {"destination": "s3://finance/allotment/monthly"})
    assert result is not None and result.location == "s3://finance/allotment/monthly/finance-2026-07.csv"
    body = s3.get_object(Bucket="finance", Key="allotment/monthly/finance-2026-07.csv")["Body"].read()
    focus = seeded.hooks.export("focus", "2026-07", {"destination": "s3://finance/focus"})
    assert focus is not None
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="finance", Prefix="focus/")["Contents"]}
    assert keys == {"focus/focus-2026-07.csv", "focus/focus-2026-07.metadata.json"}
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert sum(Decimal(r["amount_usd"]) for r in rows) * 10**9 == sum(e.cost for e in events if in_july(e))


def test_unknown_kind_is_left_to_other_plugins(seeded: Runtime) -> None:
    assert seeded.hooks.export("netsuite", "2026-07", {}) is None


# the Parquet types, written out by hand: exact decimals for money, never a float
COSTS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingCurrencyEffectiveCost")
PRICES = (
    "ContractedUnitPrice",
    "ListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
)
INSTANTS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
NULLABLE = {
    "ChargeClass",
    *PRICES,
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    *(c for c in COLUMNS if c.startswith(("CommitmentDiscount", "CapacityReservation"))),
    "AvailabilityZone",
    "InvoiceId",
    "x_WorkflowId",
    "x_ServiceTier",  # empty when the provider did not say which tier served the call
}


def _expected_type(column: str) -> pa.DataType:
    if column in COSTS:
        return pa.decimal128(38, 9)
    if column in PRICES:
        return pa.decimal128(38, 18)
    if column in ("PricingQuantity", "CommitmentDiscountQuantity"):
        return pa.decimal128(38, 6)
    if column in ("ConsumedQuantity", "x_RequestCount"):
        return pa.int64()
    if column in INSTANTS:
        return pa.timestamp("us", tz="UTC")
    if column == "x_Enforced":
        return pa.bool_()
    return pa.string()  # text, and the JSON of Tags and SkuPriceDetails


def _as_csv_cell(value: Any, csv_cell: str) -> str:
    """A Parquet value written as the CSV writes it; decimals must also be equal as Decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        assert value == Decimal(csv_cell)
        text = f"{value.normalize():f}"
        return "0" if text == "-0" else text
    if isinstance(value, datetime):
        assert value.utcoffset() is not None and not value.utcoffset()
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(value, int | str), type(value)
    return str(value)


def test_focus_parquet_is_the_csv_with_an_explicit_schema(
    seeded: Runtime, events: list[Ev], tmp_path: Path
) -> None:
    csv_rows = _focus(seeded, tmp_path / "csv")
    result = seeded.hooks.export(
        "focus", "2026-07", {"destination": str(tmp_path / "pq"), "format": "parquet"}
    )
    assert result is not None and result.details["format"] == "parquet"
    assert result.location == str(tmp_path / "pq" / "focus-2026-07.parquet")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "focus-2026-07.metadata.json",
        "focus-2026-07.parquet",
    ]
    table = pq.read_table(tmp_path / "pq" / "focus-2026-07.parquet")
    assert table.schema.names == list(COLUMNS)
    for field in table.schema:
        assert field.type == _expected_type(field.name), field.name
        assert field.nullable == (field.name in NULLABLE), field.name
        assert not pa.types.is_floating(field.type)
    for column in COLUMNS:  # nullable exactly where the CSV can write an empty cell
        if column not in NULLABLE:
            assert all(r[column] != "" for r in csv_rows), column
    assert not any(r["ChargeClass"] for r in csv_rows) and table.column("ChargeClass").null_count == len(
        csv_rows
    )

    rows = table.to_pylist()
    assert result.rows == len(rows) == len(csv_rows) > 0
    for parquet_row, csv_row in zip(rows, csv_rows, strict=True):
        assert list(parquet_row) == list(csv_row)
        for column in COLUMNS:
            assert _as_csv_cell(parquet_row[column], csv_row[column]) == csv_row[column], column
    for column in ("Tags", "SkuPriceDetails"):
        assert all(isinstance(orjson.loads(r[column]), dict) for r in rows)

    # money: exact nano-dollars, summed as Decimals and by Arrow, equal to the ledger
    july_nanos = sum(e.cost for e in events if in_july(e))
    assert all(r["BilledCost"] == Decimal(0) for r in rows)
    assert sum(r["EffectiveCost"] for r in rows) * 10**9 == july_nanos
    assert pc.sum(table.column("EffectiveCost")).as_py() * 10**9 == july_nanos
    assert result.details["effective_cost_nanos"] == july_nanos
    assert all(r["EffectiveCost"].as_tuple().exponent == -9 for r in rows)
    row = next(r for r in rows if r["SkuId"] == "gpt-5.4-mini-cache-read")
    assert row["ListUnitPrice"] == Decimal("0.075")
    assert row["ChargePeriodStart"].tzinfo is not None and row["BillingPeriodStart"] == datetime(
        2026, 7, 1, 4, tzinfo=UTC
    )

    meta = orjson.loads((tmp_path / "pq" / "focus-2026-07.metadata.json").read_bytes())
    csv_meta = orjson.loads((tmp_path / "csv" / "focus-2026-07.metadata.json").read_bytes())
    assert {k: v for k, v in meta.items() if k != "CreatedAt"} == {
        k: v for k, v in csv_meta.items() if k != "CreatedAt"
    }


def test_a_bad_format_is_refused_and_writes_nothing(seeded: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidRequest, match="'xlsx' is not available for kind 'focus'.*csv, parquet"):
        seeded.hooks.export("focus", "2026-07", {"destination": str(out), "format": "xlsx"})
    with pytest.raises(InvalidRequest, match="'parquet' is not available for kind 'csv'"):
        seeded.hooks.export("csv", "2026-07", {"destination": str(out), "format": "parquet"})
    assert not out.exists()


def test_parquet_without_pyarrow_is_a_clear_error_and_writes_nothing(
    seeded: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # the import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "out"
    with pytest.raises(InvalidRequest, match=r"pip install 'allotment\[parquet\]'"):
        seeded.hooks.export("focus", "2026-07", {"destination": str(out), "format": "parquet"})
    assert not out.exists()
    # the CSV needs no extra
    result = seeded.hooks.export("focus", "2026-07", {"destination": str(out)})
    assert result is not None and sorted(p.name for p in out.iterdir()) == [
        "focus-2026-07.csv",
        "focus-2026-07.metadata.json",
    ]


def test_a_price_parquet_cannot_hold_exactly_is_refused(seeded: Runtime) -> None:
    row = dict(focus_rows(seeded, "2026-07")[0])
    assert pq.read_table(io.BytesIO(parquet_bytes([row]))).num_rows == 1
    row["ListUnitPrice"] = "0." + "0" * 18 + "1"  # 19 places: never rounded
    with pytest.raises(InvalidRequest, match=r"ListUnitPrice .* does not fit decimal\(38, 18\)"):
        parquet_bytes([row])


def test_focus_parquet_to_s3_with_moto(seeded: Runtime, events: list[Ev], s3: Any) -> None:
    result = seeded.hooks.export(
        "focus", "2026-07", {"destination": "s3://finance/focus", "format": "parquet"}
    )
    assert result is not None and result.location == "s3://finance/focus/focus-2026-07.parquet"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="finance", Prefix="focus/")["Contents"]}
    obj = s3.get_object(Bucket="finance", Key="focus/focus-2026-07.parquet")
    body = obj["Body"].read()
    assert keys == {"focus/focus-2026-07.parquet", "focus/focus-2026-07.metadata.json"}
    assert obj["ContentType"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(body))
    assert table.num_rows == result.rows
    total = sum(table.column("EffectiveCost").to_pylist()) * 10**9
    assert total == sum(e.cost for e in events if in_july(e))
