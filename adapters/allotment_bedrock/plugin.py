"""The ``bedrock`` plugin: adds ``allotment ingest bedrock`` through ``register_commands``.

Registered by entry point, exactly as a third-party package would register itself.
"""

from __future__ import annotations

from typing import Any

import typer

from allotment.cli.common import DB_OPTION, JSON_OPTION, emit_json, emit_table, handle_errors, open_runtime
from allotment.hookspecs import hookimpl


@handle_errors
def ingest_bedrock(
    source: str = typer.Argument(..., help="a file, a directory, or s3://bucket/prefix"),
    region: str | None = typer.Option(None, "--region", help="AWS region of the S3 bucket"),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="an S3-compatible endpoint"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Record Bedrock model-invocation logs passively; report drift against settled calls."""
    from allotment_bedrock.ingest import ingest

    s3_client = None
    if source.startswith("s3://") and (region or endpoint_url):
        import boto3

        s3_client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
    with open_runtime(database_url) as rt:
        summary = ingest(rt, source, s3_client=s3_client).to_dict()
    if as_json:
        emit_json(summary)
        return
    counts = ("records", "recorded", "settled", "duplicates", "malformed", "unattributed")
    typer.echo("  ".join(f"{name} {summary[name]}" for name in counts))
    for problem in summary["problems"]:
        typer.echo(f"skipped {problem}")
    if summary["drift"]:
        typer.echo("drift between settled calls and the invocation log:")
        emit_table(
            summary["drift"],
            ["request_id", "model", "outcome", "settled_cost_nanos", "logged_cost_nanos"],
        )


@hookimpl
def register_commands(cli: Any) -> None:
    ingest_app = typer.Typer(help="Ingest provider logs for passive attribution.", no_args_is_help=True)
    ingest_app.command("bedrock")(ingest_bedrock)
    cli.add_typer(ingest_app, name="ingest")
