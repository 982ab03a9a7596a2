"""Secrets in configuration: ``env:NAME`` references, read from the environment when used.

A secret is never stored in the database or in ``config_revisions``: the config keeps the
reference and whoever needs the value reads it at that moment. Plugins use the same two
helpers, so every ``env:`` error reads alike.
"""

from __future__ import annotations

import os
from typing import Any

from allotment.errors import ConfigError

PREFIX = "env:"


def read_env_ref(value: str | None) -> str | None:
    """``env:NAME`` -> the variable's value (None when unset or empty); a literal as it is."""
    if value is None or not value.startswith(PREFIX):
        return value
    return os.environ.get(value[len(PREFIX) :]) or None


def require_secret(value: Any, where: str, example: str = "env:NAME") -> str:
    """The secret configured at ``where`` (e.g. ``plugins.rippling.api_key``), or ``ConfigError``.

    A literal is accepted (handy in local tests); ``example`` shows the expected reference.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} is required (e.g. {example})")
    resolved = read_env_ref(value)
    if not resolved:
        raise ConfigError(f"{where}: environment variable {value[len(PREFIX) :]} is not set")
    return resolved
