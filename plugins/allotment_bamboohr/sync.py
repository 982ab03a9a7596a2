"""Turn BambooHR employees into ``DirectoryChanges``: a full report, or only what changed since.

Settings come from ``plugins.bamboohr`` in ``allotment.yaml``; secrets are ``env:NAME`` references.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from allotment.errors import ConfigError
from allotment.secrets import require_secret
from allotment.types import DirectoryChanges, DirectoryPerson
from allotment_bamboohr.client import BambooHRClient

SOURCE = "bamboohr"
BASE_FIELDS = [
    "firstName",
    "lastName",
    "workEmail",
    "jobTitle",
    "department",
    "division",
    "location",
    "status",
    "hireDate",
    "terminationDate",
    "supervisorEId",
    "supervisorEmail",
    "employeeNumber",
]
_LEVEL = re.compile(r"(\d+)\s*$")


def secret(value: Any, name: str) -> str:
    """``env:NAME`` is read from the environment now; a literal is allowed for local tests."""
    return require_secret(value, f"plugins.bamboohr.{name}", "env:BAMBOOHR_API_KEY")


def base_url(settings: dict[str, Any]) -> str:
    if settings.get("base_url"):
        return str(settings["base_url"])
    domain = settings.get("company_domain")
    if not domain:
        raise ConfigError("plugins.bamboohr needs company_domain (or base_url)")
    if settings.get("api") == "classic":
        return f"https://api.bamboohr.com/api/gateway.php/{domain}/v1"
    return f"https://{domain}.bamboohr.com/api/v1"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    # BambooHR writes an empty date as 0000-00-00
    return None if value in ("", "0000-00-00") else value


def _level(value: Any) -> int | None:
    text = _text(value)
    match = _LEVEL.search(text) if text else None
    return int(match.group(1)) if match else None


def to_person(row: dict[str, Any], settings: dict[str, Any]) -> DirectoryPerson:
    department_field = settings.get("department_field", "department")
    level_field, cost_center_field = settings.get("level_field"), settings.get("cost_center_field")
    names = [n for n in (_text(row.get("firstName")), _text(row.get("lastName"))) if n]
    status = "active" if (_text(row.get("status")) or "").lower() == "active" else "terminated"
    return DirectoryPerson(
        email=(_text(row.get("workEmail")) or "").lower(),
        name=" ".join(names) or None,
        department=_text(row.get(department_field)),
        title=_text(row.get("jobTitle")),
        level=_level(row.get(level_field)) if level_field else None,
        manager_email=(_text(row.get("supervisorEmail")) or "").lower() or None,
        cost_center=_text(row.get(cost_center_field)) if cost_center_field else None,
        status=status,
        start_date=_text(row.get("hireDate")),
        end_date=_text(row.get("terminationDate")),
        external_id=str(row["id"]),
    )


def fields(settings: dict[str, Any]) -> list[str]:
    extra = [settings.get(k) for k in ("department_field", "level_field", "cost_center_field")]
    return BASE_FIELDS + [f for f in extra if f and f not in BASE_FIELDS]


def fetch(
    settings: dict[str, Any], since: datetime | None, *, client: BambooHRClient | None = None
) -> DirectoryChanges:
    """Everyone (``since`` None: absent people have left), or the employees changed since."""
    own = client is None
    client = client or BambooHRClient(
        base_url(settings),
        secret(settings.get("api_key"), "api_key"),
        max_attempts=int(settings.get("max_attempts", 4)),
    )
    try:
        if since is None:
            rows = client.report(fields(settings))
            people = tuple(to_person(r, settings) for r in rows)
            return DirectoryChanges(SOURCE, people, complete=True)
        changed = client.changed(since)
        entries = changed.get("employees") or {}
        deleted = [str(e.get("id", k)) for k, e in entries.items() if e.get("action") == "Deleted"]
        ids = sorted(int(k) for k, e in entries.items() if e.get("action") != "Deleted")
        rows = client.report(fields(settings), employee_ids=ids) if ids else []
        people = [to_person(r, settings) for r in rows]
        # a deleted record has no details left: it is matched by its BambooHR id
        people += [DirectoryPerson(email="", status="terminated", external_id=i) for i in deleted]
        return DirectoryChanges(SOURCE, tuple(people), complete=False, cursor=changed.get("latest"))
    finally:
        if own:
            client.close()
