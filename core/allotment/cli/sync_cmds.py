"""``allotment sync``: pull the HR systems and apply joiners, movers and leavers (or show the diff).

A failing sync applies nothing and exits non-zero; unplaced records are listed, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from allotment.cli.common import DB_OPTION, JSON_OPTION, emit_json, emit_table, handle_errors, open_runtime


def _describe(change: dict[str, Any]) -> str:
    keys = sorted(set(change["before"]) | set(change["after"]))
    return ", ".join(f"{k}: {change['before'].get(k)} -> {change['after'].get(k)}" for k in keys)


def register(cli: typer.Typer) -> None:
    @cli.command("sync")
    @handle_errors
    def sync(
        dry_run: bool = typer.Option(False, "--dry-run", help="show the diff and write nothing"),
        full: bool = typer.Option(False, "--full", help="ignore the last sync time: a full pull"),
        config: Path | None = typer.Option(None, "--config", help="apply this allotment.yaml first"),
        database_url: str | None = DB_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Sync people from the HR systems (Rippling, BambooHR): joiners, movers, leavers."""
        from allotment.sync import run_sync

        with open_runtime(database_url, config) as rt:
            result = run_sync(rt, dry_run=dry_run, full=full)
        data = result.to_dict()
        if as_json:
            emit_json(data)
            return
        mode = "dry run (nothing written)" if dry_run else "applied"
        counts = data["counts"]
        typer.echo(f"sync {mode}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        rows = [dict(c, change=_describe(c)) for c in data["changes"]]
        emit_table(rows, ["action", "email", "source", "change", "reason"])
        if data["unplaced"]:
            typer.echo("\nnot placed (add a rule under plugins.sync.rules):")
            emit_table(data["unplaced"], ["source", "email", "external_id", "reason"])
        if data["revoked_keys"]:
            typer.echo(f"\nrevoked {data['revoked_keys']} key(s)")
        for item in data["issued_keys"]:
            typer.echo(f"issued {item['key_id']} to {item['email']}: {item['key']}  (shown once)")
