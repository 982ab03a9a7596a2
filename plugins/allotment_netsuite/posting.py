"""The ``netsuite`` export: validate the mapping, then upsert one journal per subsidiary (or write CSV).

Options: ``runtime`` (required), ``mode`` (``post`` or ``csv``), ``dry_run``, ``destination`` (a folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from allotment.errors import ConfigError, InvalidRequest
from allotment.secrets import require_secret
from allotment.types import ExportResult
from allotment_netsuite.client import NetSuiteClient
from allotment_netsuite.journal import build_journals, csv_bytes, referenced_ids, spend_by_cost_center
from allotment_netsuite.oauth1 import TokenAuth

if TYPE_CHECKING:
    from allotment.runtime import Runtime

KIND = "netsuite"


def _secret(settings: dict[str, Any], name: str) -> str:
    return require_secret(settings.get(name), f"plugins.netsuite.{name}")


def client_for(settings: dict[str, Any]) -> NetSuiteClient:
    account = str(settings.get("account_id") or "")
    if not account:
        raise ConfigError("plugins.netsuite.account_id is required (e.g. 1234567_SB1)")
    auth = TokenAuth(
        realm=account.strip().upper().replace("-", "_"),
        consumer_key=_secret(settings, "consumer_key"),
        consumer_secret=_secret(settings, "consumer_secret"),
        token_id=_secret(settings, "token_id"),
        token_secret=_secret(settings, "token_secret"),
    )
    return NetSuiteClient(
        account, auth, base_url=settings.get("base_url"), max_attempts=int(settings.get("max_attempts", 4))
    )


def validate_remote(client: NetSuiteClient, refs: dict[str, set[str]]) -> None:
    """Every referenced record must exist and be active in NetSuite before anything is posted."""
    missing: dict[str, list[str]] = {}
    for table, ids in sorted(refs.items()):
        if not all(i.isdigit() for i in ids):
            raise ConfigError(f"plugins.netsuite: {table} ids must be internal ids (digits): {sorted(ids)}")
        rows = client.suiteql(
            f"SELECT id FROM {table} WHERE id IN ({', '.join(sorted(ids))})"
            + (" AND isinactive = 'F'" if table != "currency" else "")
        )
        found = {str(r.get("id")) for r in rows}
        if ids - found:
            missing[table] = sorted(ids - found)
    if missing:
        raise ConfigError(
            f"NetSuite does not know (or has inactive) {missing}; nothing was posted",
            code="netsuite_unknown_records",
            details={"missing": missing},
        )


def run(runtime: Runtime, period: str, options: dict[str, Any]) -> ExportResult:
    settings = (runtime.config.plugins.get("netsuite") if runtime.config else None) or {}
    if not settings:
        raise ConfigError("plugins.netsuite is not configured in allotment.yaml")
    mode = str(options.get("mode") or settings.get("mode") or "post")
    if mode not in ("post", "csv"):
        raise InvalidRequest(f"netsuite export mode is post or csv, got {mode!r}")
    journals = build_journals(settings, period, spend_by_cost_center(runtime, period))
    content = csv_bytes(journals)
    details: dict[str, Any] = {
        "mode": mode,
        "posted": False,
        "journals": [
            {
                "external_id": j.external_id,
                "subsidiary": j.subsidiary,
                "debit_total": f"{j.debit_total:.2f}",
                "lines": len(j.lines),
            }
            for j in journals
        ],
    }
    location = None
    if options.get("destination"):
        folder = Path(str(options["destination"]))
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"netsuite-journal-{period}.csv"
        target.write_bytes(content)
        location = str(target)
    if mode == "post" and not options.get("dry_run") and journals:
        client = client_for(settings)
        try:
            validate_remote(client, referenced_ids(journals))
            for journal, info in zip(journals, details["journals"], strict=True):
                info["internal_id"] = client.upsert_journal(journal.external_id, journal.body())
        finally:
            client.close()
        details["posted"] = True
    rows = sum(len(j.lines) for j in journals)
    return ExportResult(KIND, period, rows, location=location, content=content, details=details)
