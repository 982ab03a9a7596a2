"""``allotment serve``: run the OpenAI/Anthropic-compatible gateway with uvicorn.

``--demo`` (what ``make run`` starts) applies the sample org, answers from the offline mock
upstream and prints two demo keys: one with the tier's budget, one with a one-cent budget.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from allotment.cli.common import handle_errors

_ENV_DEMO = "ALLOTMENT_SERVE_DEMO"
_ENV_MAX_BODY = "ALLOTMENT_SERVE_MAX_BODY_BYTES"
_ENV_JOBS = "ALLOTMENT_SERVE_JOBS"
DEMO_EMAIL = "ada@acme.example"
DEMO_SMALL_BUDGET = "0.01"


def _uvicorn_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        from allotment.gateway.coalesce import coalescing_protocol

        options["http"] = coalescing_protocol() or "httptools"
    return options


def worker_app() -> Any:
    """App factory for ``--workers N``: each worker process opens its own runtime."""
    from allotment.gateway import create_app
    from allotment.gateway.logs import configure_logging
    from allotment.runtime import Runtime
    from allotment.settings import Settings

    configure_logging(os.environ.get("ALLOTMENT_LOG_LEVEL", "info"))
    # the parent applied the config already; workers only read the database
    settings = Settings(config=None)
    runtime = Runtime.open(settings, migrate=False)
    return create_app(
        runtime,
        force_mock=os.environ.get(_ENV_DEMO) == "1",
        max_body_bytes=int(os.environ.get(_ENV_MAX_BODY, str(32 * 1024 * 1024))),
        run_jobs=os.environ.get(_ENV_JOBS, "1") == "1",
        close_runtime=True,
    )


def _prepare_demo(runtime: Any) -> list[tuple[str, str]]:
    from allotment.config import SAMPLE_CONFIG
    from allotment.money import to_decimal

    if runtime.config is None:
        runtime.apply_config_text(SAMPLE_CONFIG, "sample allotment.yaml")
    emails = {p["email"] for p in runtime.admin.people()}
    email = DEMO_EMAIL if DEMO_EMAIL in emails else sorted(emails)[0]
    key, _ = runtime.admin.issue_key(email, name="demo")
    small, _ = runtime.admin.issue_key(
        email, name="demo-small-budget", monthly_budget=to_decimal(DEMO_SMALL_BUDGET)
    )
    runtime.refresh_directory()
    return [(f"demo key for {email}", key), (f"demo key with a ${DEMO_SMALL_BUDGET} budget", small)]


def _banner(host: str, port: int, demo_keys: list[tuple[str, str]]) -> str:
    base = f"http://{host}:{port}"
    lines = [f"allotment gateway on {base}  (OpenAI: {base}/v1, Anthropic: {base})"]
    if demo_keys:
        lines.append("demo mode: sample org 'Acme', every provider answered by the offline mock")
        for label, key in demo_keys:
            lines.append(f"  {label}: {key}")
        key = demo_keys[0][1]
        lines += [
            "try:",
            f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\",
            "    -H 'Content-Type: application/json' \\",
            '    -d \'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}\'',
        ]
    return "\n".join(lines)


def register(cli: typer.Typer) -> None:
    @cli.command()
    @handle_errors
    def serve(
        config: Annotated[Path | None, typer.Option("--config", "-c", help="allotment.yaml to apply")] = None,
        host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 4000,
        workers: Annotated[int, typer.Option(min=1, help="worker processes (see docs/gateway.md)")] = 1,
        demo: Annotated[bool, typer.Option("--demo", help="sample org, mock upstream, demo keys")] = False,
        graceful_timeout: Annotated[
            float,
            typer.Option(help="seconds streams may finish on shutdown before partial charging"),
        ] = 10.0,
        max_body_mb: Annotated[int, typer.Option(help="larger request bodies get 413")] = 32,
        log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
        jobs: Annotated[
            bool, typer.Option("--jobs/--no-jobs", help="run scheduled jobs in this process")
        ] = True,
    ) -> None:
        """Run the OpenAI- and Anthropic-compatible gateway (default 127.0.0.1:4000)."""
        import uvicorn

        from allotment.gateway import create_app
        from allotment.gateway.logs import configure_logging
        from allotment.runtime import Runtime
        from allotment.settings import get_settings

        configure_logging(log_level)
        settings = get_settings()
        settings.check_production()
        runtime = Runtime.open(settings, config_file=config)
        demo_keys = _prepare_demo(runtime) if demo else []
        typer.echo(_banner(host, port, demo_keys))
        max_body = max_body_mb * 1024 * 1024
        options = {
            "host": host,
            "port": port,
            "log_config": None,
            "access_log": False,
            "timeout_graceful_shutdown": graceful_timeout,
            **_uvicorn_options(),
        }
        if workers == 1:
            app = create_app(runtime, force_mock=demo, max_body_bytes=max_body, run_jobs=jobs)
            try:
                uvicorn.run(app, **options)
            finally:
                runtime.close()
            return
        runtime.close()
        os.environ[_ENV_DEMO] = "1" if demo else "0"
        os.environ[_ENV_MAX_BODY] = str(max_body)
        os.environ["ALLOTMENT_LOG_LEVEL"] = log_level
        os.environ[_ENV_JOBS] = "1" if jobs else "0"
        uvicorn.run("allotment.cli.serve:worker_app", factory=True, workers=workers, **options)
