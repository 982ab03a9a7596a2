"""Rippling directory sync for allotment: a ``sync_directory`` plugin over Rippling's REST API.

Reads every worker (all statuses) with departments and levels; each sync is complete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from allotment.hookspecs import hookimpl
from allotment.types import DirectoryChanges
from allotment_rippling.sync import fetch

__all__ = ["sync_directory"]


@hookimpl
def sync_directory(since: datetime | None, config: dict[str, Any]) -> DirectoryChanges | None:
    settings = config.get("rippling")
    if not settings:
        return None  # not configured: this HR system takes no part in the sync
    # Rippling's /workers filters on status and work_email only, so every sync is a full one
    return fetch(settings)
