"""Turn Rippling workers into ``DirectoryChanges``, joining departments, levels and managers by id.

``Department.reference_code`` is the cost center; ``Level.global_level`` is the level the rules read.
"""

from __future__ import annotations

from typing import Any

from allotment.secrets import require_secret
from allotment.types import DirectoryChanges, DirectoryPerson
from allotment_rippling.client import DEFAULT_BASE_URL, RipplingClient, RipplingError

SOURCE = "rippling"
_STATUS = {"ACTIVE": "active", "HIRED": "active", "ACCEPTED": "active", "TERMINATED": "terminated"}


def secret(value: Any) -> str:
    return require_secret(value, "plugins.rippling.api_key", "env:RIPPLING_API_KEY")


def to_person(
    worker: dict[str, Any],
    departments: dict[str, dict[str, Any]],
    levels: dict[str, dict[str, Any]],
    emails: dict[str, str],
) -> DirectoryPerson:
    status = _STATUS.get(str(worker.get("status") or ""))
    if status is None:
        # dropping the worker would read as "absent, so left" in a complete sync: refuse instead
        raise RipplingError(f"worker {worker.get('id')} has an unknown status {worker.get('status')!r}")
    department = worker.get("department") or departments.get(worker.get("department_id") or "") or {}
    level = worker.get("level") or levels.get(worker.get("level_id") or "") or {}
    global_level = level.get("global_level")
    return DirectoryPerson(
        email=str(worker.get("work_email") or "").strip().lower(),
        name=None,
        department=department.get("name"),
        title=worker.get("title"),
        level=global_level if isinstance(global_level, int) else None,
        manager_email=emails.get(worker.get("manager_id") or ""),
        cost_center=department.get("reference_code"),
        status=status,
        start_date=worker.get("start_date"),
        end_date=worker.get("end_date"),
        external_id=str(worker["id"]),
    )


def fetch(settings: dict[str, Any], *, client: RipplingClient | None = None) -> DirectoryChanges:
    own = client is None
    client = client or RipplingClient(
        secret(settings.get("api_key")),
        str(settings.get("base_url") or DEFAULT_BASE_URL),
        max_attempts=int(settings.get("max_attempts", 4)),
        page_size=int(settings.get("page_size", 100)),
    )
    try:
        # the whole directory is read before anything is returned: a failing page aborts the sync
        departments = {d["id"]: d for d in client.list("departments")}
        levels = {lv["id"]: lv for lv in client.list("levels")}
        workers = list(client.list("workers", order_by="id"))
    finally:
        if own:
            client.close()
    emails = {w["id"]: str(w.get("work_email") or "").lower() for w in workers if w.get("work_email")}
    people = [to_person(w, departments, levels, emails) for w in workers]
    return DirectoryChanges(SOURCE, tuple(people), complete=True)
