"""The core's CLI commands, added through ``register_commands`` like any plugin's.

Gateway (``serve``) and pricing (``price``, ``rates``) commands live in their own modules.
"""

from __future__ import annotations

import importlib
from typing import Any

from allotment.hookspecs import hookimpl

COMMAND_MODULES = (
    "allotment.cli.core_cmds",
    "allotment.cli.rates",
    "allotment.cli.serve",
    "allotment.cli.report_cmds",
    "allotment.cli.sync_cmds",
)


class CoreCommands:
    @hookimpl
    def register_commands(self, cli: Any) -> None:
        for name in COMMAND_MODULES:
            importlib.import_module(name).register(cli)
