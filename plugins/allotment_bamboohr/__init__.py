"""BambooHR directory sync for allotment: a ``sync_directory`` plugin over the BambooHR API.

Incremental through ``/employees/changed``; details from the custom report (active and inactive).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from allotment.hookspecs import hookimpl
from allotment.types import DirectoryChanges
from allotment_bamboohr.sync import fetch

__all__ = ["sync_directory"]


@hookimpl
def sync_directory(since: datetime | None, config: dict[str, Any]) -> DirectoryChanges | None:
    settings = config.get("bamboohr")
    if not settings:
        return None  # not configured: this HR system takes no part in the sync
    return fetch(settings, since)
