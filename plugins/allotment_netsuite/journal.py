"""A month's spend per cost center as NetSuite journal entries (one per subsidiary) and the CSV import.

Debit the expense account by department and class, credit the accrual account; amounts in cents.
"""

from __future__ import annotations

import calendar
import csv
import io
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from allotment.directory import period_bounds_for_key
from allotment.errors import ConfigError

if TYPE_CHECKING:
    from allotment.runtime import Runtime

NANOS_PER_DOLLAR = Decimal(1_000_000_000)
CENT = Decimal("0.01")
UNASSIGNED = "(none)"
CSV_COLUMNS = [
    "External ID",
    "Date",
    "Posting Period",
    "Subsidiary",
    "Currency",
    "Exchange Rate",
    "Memo",
    "Account",
    "Debit",
    "Credit",
    "Line Memo",
    "Department",
    "Class",
    "Location",
    "Name",
]


@dataclass(frozen=True, slots=True)
class Line:
    cost_center: str
    account: str
    account_name: str
    amount: Decimal  # dollars, two decimals
    side: str  # debit | credit
    memo: str
    department: str | None = None
    department_name: str | None = None
    klass: str | None = None
    class_name: str | None = None
    location: str | None = None
    location_name: str | None = None


@dataclass
class Journal:
    external_id: str
    subsidiary: str
    subsidiary_name: str
    currency: str
    currency_name: str
    tran_date: date
    memo: str
    lines: list[Line] = field(default_factory=list)

    @property
    def debit_total(self) -> Decimal:
        return sum((ln.amount for ln in self.lines if ln.side == "debit"), Decimal(0))

    def body(self) -> dict[str, Any]:
        """The SuiteTalk REST ``journalEntry`` record; amounts go on the wire as JSON numbers."""
        items = []
        for ln in self.lines:
            item: dict[str, Any] = {"account": {"id": ln.account}, ln.side: float(ln.amount), "memo": ln.memo}
            for key, value in (("department", ln.department), ("class", ln.klass), ("location", ln.location)):
                if value:
                    item[key] = {"id": value}
            items.append(item)
        return {
            "externalId": self.external_id,
            "subsidiary": {"id": self.subsidiary},
            "currency": {"id": self.currency},
            "tranDate": self.tran_date.isoformat(),
            "memo": self.memo,
            "approved": True,
            "line": {"items": items},
        }


def spend_by_cost_center(rt: Runtime, period: str) -> dict[str, int]:
    """Nano-dollars per cost center in the org-timezone month; an event without one uses its team's."""
    start, end = period_bounds_for_key(period, rt.directory.timezone)
    sql = text(
        "SELECT COALESCE(e.cost_center, t.cost_center) AS cc, SUM(e.cost_nanos) FROM usage_events e "
        "LEFT JOIN teams t ON t.id = e.team_id WHERE e.ts >= :t0 AND e.ts < :t1 "
        "GROUP BY COALESCE(e.cost_center, t.cost_center)"
    )
    with rt.engine.connect() as conn:
        rows = conn.execute(sql, {"t0": rt.ledger.ts(start), "t1": rt.ledger.ts(end)})
        return {str(r[0]) if r[0] is not None else UNASSIGNED: int(r[1]) for r in rows if int(r[1] or 0)}


def _cents(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_DOLLAR).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _ident(value: Any, where: str) -> str:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"plugins.netsuite.{where} is required")
    return str(value).strip()


def build_journals(settings: dict[str, Any], period: str, spend: dict[str, int]) -> list[Journal]:
    """Validate the mapping against the month's cost centers, then build one journal per subsidiary."""
    subsidiaries = settings.get("subsidiaries") or {}
    mapping = settings.get("cost_centers") or {}
    if not isinstance(subsidiaries, dict) or not subsidiaries:
        raise ConfigError("plugins.netsuite.subsidiaries maps a subsidiary id to {currency, credit_account}")
    default = mapping.get("default")
    missing = sorted(cc for cc in spend if cc not in mapping and default is None)
    if missing:
        raise ConfigError(
            f"plugins.netsuite.cost_centers has no mapping for {', '.join(missing)}; nothing was posted",
            code="netsuite_unmapped",
            details={"unmapped": missing},
        )
    year, month = (int(p) for p in period.split("-"))
    tran_date = date(year, month, calendar.monthrange(year, month)[1])
    month_name = tran_date.strftime("%b %Y")
    prefix = str(settings.get("external_id_prefix") or "aispend")
    journals: dict[str, Journal] = {}
    for cc in sorted(spend):
        amount = _cents(spend[cc])
        if amount == 0:
            continue  # under half a cent: nothing a ledger can carry
        entry = mapping.get(cc, default)
        where = f"cost_centers.{cc if cc in mapping else 'default'}"
        sub_id = str(
            entry.get("subsidiary") or settings.get("default_subsidiary") or next(iter(subsidiaries))
        )
        sub = subsidiaries.get(sub_id)
        if not isinstance(sub, dict):
            raise ConfigError(f"plugins.netsuite.{where}: unknown subsidiary {sub_id!r}")
        journal = journals.get(sub_id)
        if journal is None:
            journal = journals[sub_id] = Journal(
                external_id=f"{prefix}-{period}-{sub_id}",
                subsidiary=sub_id,
                subsidiary_name=str(sub.get("name") or sub_id),
                currency=_ident(sub.get("currency"), f"subsidiaries.{sub_id}.currency"),
                currency_name=str(sub.get("currency_name") or sub.get("currency")),
                tran_date=tran_date,
                memo=f"AI spend accrual {month_name}",
            )
        shared = {
            "department": entry.get("department"),
            "department_name": entry.get("department_name"),
            "klass": entry.get("class"),
            "class_name": entry.get("class_name"),
        }
        journal.lines.append(
            Line(
                cc,
                _ident(entry.get("account"), f"{where}.account"),
                str(entry.get("account_name") or entry["account"]),
                amount,
                "debit",
                f"LLM usage - {cc}",
                location=entry.get("location"),
                location_name=entry.get("location_name"),
                **shared,
            )
        )
        credit = _ident(sub.get("credit_account"), f"subsidiaries.{sub_id}.credit_account")
        journal.lines.append(
            Line(
                cc,
                credit,
                str(sub.get("credit_account_name") or credit),
                amount,
                "credit",
                "Accrued AI vendor spend",
                **shared,
            )
        )
    return [journals[k] for k in sorted(journals)]


def csv_bytes(journals: list[Journal]) -> bytes:
    """The Import Assistant single-file layout: one row per line, grouped by External ID."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for j in journals:
        for ln in j.lines:
            writer.writerow(
                [
                    j.external_id,
                    j.tran_date.strftime("%m/%d/%Y"),
                    j.tran_date.strftime("%b %Y"),
                    j.subsidiary_name,
                    j.currency_name,
                    "1",
                    j.memo,
                    ln.account_name,
                    f"{ln.amount:.2f}" if ln.side == "debit" else "",
                    f"{ln.amount:.2f}" if ln.side == "credit" else "",
                    ln.memo,
                    ln.department_name or ln.department or "",
                    ln.class_name or ln.klass or "",
                    ln.location_name or ln.location or "",
                    "",
                ]
            )
    return buffer.getvalue().encode("utf-8")


def referenced_ids(journals: list[Journal]) -> dict[str, set[str]]:
    """Record ids each SuiteQL table must contain before anything is posted."""
    refs: dict[str, set[str]] = {
        t: set() for t in ("subsidiary", "currency", "account", "department", "classification", "location")
    }
    for j in journals:
        refs["subsidiary"].add(j.subsidiary)
        refs["currency"].add(j.currency)
        for ln in j.lines:
            refs["account"].add(ln.account)
            for table, value in (
                ("department", ln.department),
                ("classification", ln.klass),
                ("location", ln.location),
            ):
                if value:
                    refs[table].add(str(value))
    return {t: ids for t, ids in refs.items() if ids}
