"""The ``allotment`` command line: a Typer app whose commands all arrive via ``register_commands``.

Core commands are registered by a built-in plugin, exactly like a third party's.
"""

from __future__ import annotations

import sys

import typer

from allotment.errors import AllotmentError


def build_app() -> typer.Typer:
    from allotment.defaults import BUILTIN_PREFIX
    from allotment.defaults.commands import CoreCommands
    from allotment.plugins import Hooks, create_plugin_manager

    app = typer.Typer(
        name="allotment",
        help="Hard AI-spend controls: budgets reserved before the call, an append-only ledger.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    pm = create_plugin_manager([(BUILTIN_PREFIX + "commands", CoreCommands())])
    Hooks(pm).register_commands(app)
    return app


def main() -> None:
    try:
        app = build_app()
        app()
    except AllotmentError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
