"""FOCUS and CSV exports through the export hook: required columns, exact sums, S3 via moto."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import boto3
import orjson
import pytest
from moto import mock_aws

from allotment.reports.focus import COLUMNS
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


def test_finance_csv_export_to_s3_with_moto(
    seeded: Runtime, events: list[Ev], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="finance")
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
