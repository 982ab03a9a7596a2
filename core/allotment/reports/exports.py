"""The built-in exports: ``csv`` (the finance ERP lines) and ``focus`` (FinOps FOCUS with metadata).

Both return file contents; ``run_export`` also delivers them to a directory or ``s3://``. Option
``format``: ``csv`` (the default), or ``parquet`` for ``focus`` (needs the ``parquet`` extra).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from allotment.errors import InvalidRequest
from allotment.types import ExportResult

if TYPE_CHECKING:
    from allotment.runtime import Runtime

KINDS = ("csv", "focus")
FORMATS = {"csv": ("csv",), "focus": ("csv", "parquet")}


def csv_bytes(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else _cell(v) for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def build(
    rt: Runtime, kind: str, period: str, options: dict[str, Any]
) -> tuple[dict[str, bytes], int, dict[str, Any]]:
    """File name -> content for one export, the row count and details."""
    from allotment.reports.periods import parse_period

    parse_period(period)
    fmt = _format(kind, options)
    if kind == "csv":
        from allotment.reports.spend import ERP_COLUMNS, erp_rows

        shared = str(options.get("shared", "bucket"))
        rows = erp_rows(rt, period, shared=shared)
        total = sum(_nanos(r["amount_usd"]) for r in rows)
        return {f"finance-{period}.csv": csv_bytes(rows, ERP_COLUMNS)}, len(rows), {"total_nanos": total}
    if kind == "focus":
        from allotment.reports.focus import (
            COLUMNS,
            focus_rows,
            is_closed,
            metadata,
            parquet_bytes,
            require_pyarrow,
        )

        if fmt == "parquet":
            require_pyarrow()  # before reading the ledger: a missing extra fails fast
        rows = focus_rows(rt, period)
        meta = metadata(rt, period, len(rows), is_closed(rt, period))
        data = parquet_bytes(rows) if fmt == "parquet" else csv_bytes(rows, COLUMNS)
        files = {
            f"focus-{period}.{fmt}": data,
            f"focus-{period}.metadata.json": orjson.dumps(meta, option=orjson.OPT_INDENT_2),
        }
        total = sum(_nanos(r["EffectiveCost"]) for r in rows)
        details = {"effective_cost_nanos": total, "focus_version": meta["FocusVersion"], "format": fmt}
        return files, len(rows), details
    raise InvalidRequest(f"unknown export kind {kind!r} (built in: {', '.join(KINDS)})")


def _format(kind: str, options: dict[str, Any]) -> str:
    """The ``format`` option, checked before anything is read or written."""
    fmt = str(options.get("format") or "csv").lower()
    allowed = FORMATS.get(kind)
    if allowed is not None and fmt not in allowed:
        raise InvalidRequest(
            f"export format {fmt!r} is not available for kind {kind!r} (formats: {', '.join(allowed)})"
        )
    return fmt


def _nanos(usd: str) -> int:
    from allotment.money import dollars_to_nanos

    return dollars_to_nanos(usd)


def run_export(rt: Runtime, kind: str, period: str, options: dict[str, Any]) -> ExportResult:
    """Build the export; deliver it when ``options['destination']`` is set, else return bytes."""
    from allotment.reports.delivery import deliver

    files, rows, details = build(rt, kind, period, options)
    destination = options.get("destination")
    if destination:
        locations = deliver(str(destination), files)
        return ExportResult(
            kind, period, rows, location=locations[0], details={**details, "files": locations}
        )
    name = next(iter(files))
    return ExportResult(kind, period, rows, content=files[name], details={**details, "files": list(files)})
