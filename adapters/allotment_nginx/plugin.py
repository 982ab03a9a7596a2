"""The ``nginx`` plugin: ``allotment nginx config``, ``allotment tail nginx`` and the tail job.

Registered by entry point; the job runs inside ``allotment serve`` when ``plugins.nginx.log`` is set.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import typer

from allotment.cli.common import DB_OPTION, JSON_OPTION, emit_json, handle_errors, open_runtime
from allotment.errors import ConfigError
from allotment.hookspecs import hookimpl

log = logging.getLogger("allotment.nginx")
JOB_NAME = "nginx-tail"


@handle_errors
def nginx_config(
    upstream: str = typer.Option("https://api.openai.com", "--upstream", help="the LLM provider's base URL"),
    decision: str = typer.Option("http://127.0.0.1:4000", "--decision", help="allotment serve's base URL"),
    listen: str = typer.Option("8080", "--listen", help="nginx listen address"),
    log_path: str = typer.Option("/var/log/nginx/allotment.jsonl", "--log", help="the JSON access log"),
    js_path: str = typer.Option("/etc/nginx/njs/allotment.js", "--js-path", help="where allotment.js goes"),
    provider_auth: str = typer.Option(
        "/etc/nginx/allotment-provider-auth.conf",
        "--provider-auth",
        help="include file with the provider key headers (see docs)",
    ),
    passive: bool = typer.Option(False, "--passive", help="no pre-authorization: only log usage"),
    full: bool = typer.Option(False, "--full", help="a complete nginx.conf instead of an http snippet"),
    out: Path | None = typer.Option(None, "--out", help="write allotment.conf and allotment.js here"),
) -> None:
    """Print the Nginx config snippet (enforced or passive) and the njs script it imports."""
    from allotment_nginx.confgen import NginxOptions, njs_script, render_main, render_snippet

    options = NginxOptions(upstream, decision, listen, log_path, js_path, passive, provider_auth)
    conf = render_main(options) if full else render_snippet(options)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / ("nginx.conf" if full else "allotment.conf")).write_text(conf)
        (out / "allotment.js").write_text(njs_script())
        typer.echo(f"wrote {out / ('nginx.conf' if full else 'allotment.conf')} and {out / 'allotment.js'}")
        return
    typer.echo(conf)
    typer.echo(f"# ---- {js_path} ----")
    typer.echo(njs_script())


@handle_errors
def tail_nginx(
    log_path: Path = typer.Option(..., "--log", help="the allotment_json access log"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep following (default: one pass, for cron)"),
    aborted: str = typer.Option(
        "reserve", "--aborted", help="admitted calls without usage: reserve | estimate | release"
    ),
    rotate_wait: float = typer.Option(5.0, "--rotate-wait", help="seconds to drain a renamed log"),
    state: Path | None = typer.Option(None, "--state", help="checkpoint file (default: the database)"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Settle admitted calls and record passive ones from Nginx's JSON access log, idempotently."""
    from allotment_nginx.checkpoint import FileCheckpointStore
    from allotment_nginx.ingest import LogIngester

    with open_runtime(database_url) as rt:
        store = FileCheckpointStore(state) if state is not None else None
        try:
            ingester = LogIngester(rt, str(log_path), store=store, aborted=aborted, rotate_wait=rotate_wait)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            stats = ingester.run(follow=follow)
        except KeyboardInterrupt:
            stats = ingester.stats
        finally:
            ingester.close()
    if as_json:
        emit_json(stats.to_dict())
    else:
        typer.echo("  ".join(f"{k} {v}" for k, v in stats.to_dict().items()))


class _State:
    """The last runtime opened in this process (its config says whether to register the job)."""

    runtime: Any = None
    ingesters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _settings(runtime: Any) -> dict[str, Any]:
    config = runtime.config if runtime is not None else None
    settings = (config.plugins.get("nginx") if config is not None else None) or {}
    return dict(settings) if isinstance(settings, dict) else {}


@hookimpl
def runtime_opened(runtime: Any) -> None:
    _State.runtime = runtime


@hookimpl
def register_commands(cli: Any) -> None:
    nginx_app = typer.Typer(help="Nginx adapter: config generator.", no_args_is_help=True)
    nginx_app.command("config")(nginx_config)
    cli.add_typer(nginx_app, name="nginx")
    tail_app = typer.Typer(help="Tail gateway logs into the ledger.", no_args_is_help=True)
    tail_app.command("nginx")(tail_nginx)
    cli.add_typer(tail_app, name="tail")


@hookimpl
def register_jobs(scheduler: Any) -> None:
    settings = _settings(_State.runtime)
    if not settings.get("log"):
        return
    scheduler.add(
        JOB_NAME,
        tail_job,
        every=float(settings.get("every_seconds", 1.0)),
        description="settle and record calls from the nginx access log",
    )


def tail_job(runtime: Any) -> dict[str, Any]:
    """One poll of ``plugins.nginx.log``; the ingester (and its open files) lives across runs."""
    from allotment_nginx.ingest import LogIngester

    ingester = _State.ingesters.get(runtime)
    if ingester is None:
        settings = _settings(runtime)
        if not settings.get("log"):
            raise ConfigError("plugins.nginx.log is not set in allotment.yaml")
        ingester = LogIngester(
            runtime,
            str(settings["log"]),
            aborted=str(settings.get("aborted", "reserve")),
            rotate_wait=float(settings.get("rotate_wait", 5.0)),
        )
        _State.ingesters[runtime] = ingester
    ingester.poll()
    stats: dict[str, Any] = ingester.stats.to_dict()
    return stats
