"""Core commands: init, apply, keys, budgets, audit, db, plugins, jobs, settles.

Each listing prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import typer

from allotment.cli.common import DB_OPTION, JSON_OPTION, emit_json, emit_table, handle_errors, open_runtime
from allotment.errors import ConfigError, InvalidRequest

keys_app = typer.Typer(help="Issue, revoke and list API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Prove the ledger was not altered.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs.", no_args_is_help=True)
settles_app = typer.Typer(help="Settles a process could not write before it stopped.", no_args_is_help=True)


@handle_errors
def init(
    path: Path = typer.Argument(Path("allotment.yaml"), help="where to write the sample config"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a sample allotment.yaml (the Acme org: six role tiers, four teams)."""
    from allotment.config import SAMPLE_CONFIG

    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite it")
    path.write_text(SAMPLE_CONFIG, encoding="utf-8")
    typer.echo(f"wrote {path}; apply it with: allotment apply -f {path}")


@handle_errors
def apply(
    file: Path = typer.Option(..., "-f", "--file", help="allotment.yaml to apply"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate only"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate the whole file, then apply it in one transaction (a bad file changes nothing)."""
    from allotment.config import load_config_file

    config, _ = load_config_file(file)
    summary = {
        "org": config.org.name,
        "tiers": len(config.tiers),
        "teams": len(config.teams),
        "people": len(config.people),
        "label_budgets": len(config.budgets),
        "applied": not dry_run,
    }
    if not dry_run:
        with open_runtime(database_url) as rt:
            rt.apply_config_file(file)
    if as_json:
        emit_json(summary)
    else:
        verb = "valid" if dry_run else "applied"
        typer.echo(
            f"{verb}: {summary['org']}: {summary['tiers']} tiers, {summary['teams']} teams, "
            f"{summary['people']} people, {summary['label_budgets']} label budgets"
        )


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise InvalidRequest(f"a label is key=value, got {value!r}")
        labels[key.strip().lower()] = val.strip()
    return labels


@keys_app.command("issue")
@handle_errors
def keys_issue(
    person: str = typer.Option(..., "--person", help="the person's email"),
    name: str | None = typer.Option(None, "--name", help="what the key is for"),
    label: list[str] = typer.Option([], "--label", help="default label key=value (repeatable)"),
    budget: str | None = typer.Option(None, "--budget", help="monthly USD budget for this key"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Issue a key; it is shown once and stored only as a hash."""
    amount = None
    if budget is not None:
        try:
            amount = Decimal(budget)
        except ArithmeticError:
            raise InvalidRequest(f"--budget must be a number of USD, got {budget!r}") from None
        if amount < 0:
            raise InvalidRequest("--budget cannot be negative")
    with open_runtime(database_url) as rt:
        key, key_id = rt.admin.issue_key(person, name=name, labels=_labels(label), monthly_budget=amount)
    if as_json:
        emit_json({"key": key, "key_id": key_id})
    else:
        typer.echo(f"key_id: {key_id}\nkey:    {key}\n(store it now: it is not shown again)")


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key_id: str = typer.Argument(..., help="the key id (key_...)"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke a key; the next request with it is refused."""
    with open_runtime(database_url) as rt:
        rt.admin.revoke_key(key_id)
    if as_json:
        emit_json({"key_id": key_id, "status": "revoked"})
    else:
        typer.echo(f"revoked {key_id}")


@keys_app.command("list")
@handle_errors
def keys_list(
    person: str | None = typer.Option(None, "--person"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List keys (never their secrets)."""
    with open_runtime(database_url) as rt:
        rows = rt.admin.list_keys(person)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["key_id", "prefix", "email", "name", "status", "created_at"])


@handle_errors
def budgets(
    period: str | None = typer.Option(None, "--period", help="YYYY-MM (default: all)"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Wallets with limit, spent, reserved and status."""
    with open_runtime(database_url) as rt:
        rows = rt.admin.budgets(period)
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            rows,
            [
                "period",
                "scope",
                "scope_id",
                "limit_usd",
                "spent_usd",
                "reserved_usd",
                "used_percent",
                "status",
            ],
        )


@audit_app.command("verify")
@handle_errors
def audit_verify(
    seal: bool = typer.Option(False, "--seal", help="seal new entries after verifying"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Recompute every hash and seal; check wallet counters equal their entries."""
    from allotment.audit import seal as seal_ledger
    from allotment.audit import verify

    with open_runtime(database_url) as rt:
        report = verify(rt)
        if seal and report.ok:
            seal_ledger(rt)
    if as_json:
        emit_json(report.to_dict())
    else:
        typer.echo(
            f"{report.events} events, {report.entries} entries, {report.wallets} wallets, "
            f"{report.seals} seals"
        )
        for problem in report.problems:
            typer.echo(f"PROBLEM: {problem}")
        typer.echo("ledger verified" if report.ok else "ledger FAILED verification")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("seal")
@handle_errors
def audit_seal(database_url: str | None = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Append a seal covering everything written so far."""
    from allotment.audit import seal as seal_ledger

    with open_runtime(database_url) as rt:
        result = seal_ledger(rt)
    if as_json:
        emit_json(result)
    else:
        typer.echo("nothing new to seal" if result is None else f"sealed: {result['digest']}")


@db_app.command("upgrade")
@handle_errors
def db_upgrade(database_url: str | None = DB_OPTION) -> None:
    """Migrate the database to the newest schema."""
    from allotment.db.migrate import current_revision, upgrade
    from allotment.settings import Settings

    url = database_url or Settings().database_url
    upgrade(url)
    typer.echo(f"database at revision {current_revision(url)}")


@handle_errors
def plugins(as_json: bool = typer.Option(True, "--json/--table")) -> None:
    """Every loaded plugin and the hooks it implements."""
    from allotment.defaults.listing import listing_plugin_manager
    from allotment.plugins import describe_plugins

    infos = [info.to_dict() for info in describe_plugins(listing_plugin_manager())]
    if as_json:
        emit_json(infos)
    else:
        emit_table(infos, ["name", "package", "version", "hooks"])


@jobs_app.command("list")
@handle_errors
def jobs_list(database_url: str | None = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Scheduled jobs registered by the core and plugins."""
    from allotment.jobs import collect_jobs

    with open_runtime(database_url) as rt:
        rows = [
            {"name": j.name, "schedule": j.schedule_text(), "description": j.description}
            for j in collect_jobs(rt).jobs()
        ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["name", "schedule", "description"])


@jobs_app.command("run")
@handle_errors
def jobs_run(
    name: str = typer.Argument(...),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one job now (for external cron)."""
    from allotment.jobs import run_job

    with open_runtime(database_url) as rt:
        result = run_job(rt, name)
    if as_json:
        emit_json(
            {
                "job": name,
                "result": result if isinstance(result, dict | list | int | str | None) else str(result),
            }
        )
    else:
        typer.echo(f"{name}: {result}")


@settles_app.command("replay")
@handle_errors
def settles_replay(
    spool: Path | None = typer.Option(
        None, "--spool", help="the spool file (default: ALLOTMENT_SETTLE_SPOOL, else beside a SQLite ledger)"
    ),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Settle the calls a gateway or LiteLLM proxy spooled when the ledger refused them; idempotent."""
    from allotment.settle_spool import replay

    with open_runtime(database_url) as rt:
        report = replay(rt, spool)
    if as_json:
        emit_json(report.to_dict())
    else:
        typer.echo("  ".join(f"{k} {v}" for k, v in report.to_dict().items()))
    if report.kept:
        raise typer.Exit(1)  # something is still waiting: the ledger is down, or the wrong one


def register(cli: typer.Typer) -> None:
    cli.command("init")(init)
    cli.command("apply")(apply)
    cli.command("budgets")(budgets)
    cli.command("plugins")(plugins)
    cli.add_typer(keys_app, name="keys")
    cli.add_typer(audit_app, name="audit")
    cli.add_typer(db_app, name="db")
    cli.add_typer(jobs_app, name="jobs")
    cli.add_typer(settles_app, name="settles")
