"""Helpers shared by CLI commands: opening the runtime, printing JSON or tables, errors.

Every command prints ``error: ...`` and exits non-zero on an ``AllotmentError``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import typer

from allotment.errors import AllotmentError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Translate ``AllotmentError`` into a one-line message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AllotmentError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_runtime(database_url: str | None = None, config: Path | None = None) -> Iterator[Any]:
    from allotment.runtime import Runtime
    from allotment.settings import Settings

    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)
    runtime = Runtime.open(settings, config_file=config)
    try:
        yield runtime
    finally:
        runtime.close()


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        typer.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


DB_OPTION = typer.Option(None, "--database-url", envvar="ALLOTMENT_DATABASE_URL", help="database URL")
JSON_OPTION = typer.Option(False, "--json", help="print JSON")
