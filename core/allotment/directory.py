"""The in-memory snapshot of who may spend what: org, tiers, teams, people, keys, label budgets.

Loaded from the database and reloaded whenever the directory's generation changes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Engine, text

from allotment.config import AllotmentConfig, parse_config
from allotment.db.ledger import GENERATION_KEY
from allotment.types import Principal


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def person_id_for(email: str) -> str:
    """An opaque, stable person id (events never carry emails as ids)."""
    return "p_" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


class Allowlist:
    """Model globs compiled once into one regex, matched against ``provider/model`` and ``model``."""

    def __init__(self, globs: list[str]) -> None:
        self.globs = tuple(globs)
        if globs:
            union = "|".join(f"(?:{fnmatch.translate(g)})" for g in globs)
            self._regex: re.Pattern[str] | None = re.compile(union)
        else:
            self._regex = None
        self._cache: dict[tuple[str, str], bool] = {}

    def allows(self, provider: str, model: str) -> bool:
        key = (provider, model)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        regex = self._regex
        result = regex is not None and bool(regex.match(f"{provider}/{model}") or regex.match(model))
        if len(self._cache) < 10_000:
            self._cache[key] = result
        return result


@dataclass(frozen=True, slots=True)
class TierInfo:
    id: str
    name: str
    monthly_budget_nanos: int | None
    allowlist: Allowlist
    max_request_tokens: int | None


@dataclass(frozen=True, slots=True)
class TeamInfo:
    id: str
    name: str
    cost_center: str | None
    monthly_budget_nanos: int | None


@dataclass(frozen=True, slots=True)
class PersonInfo:
    id: str
    email: str
    name: str | None
    team_id: str | None
    tier_id: str | None
    level: int | None
    cost_center: str | None
    monthly_budget_nanos: int | None
    status: str


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    person_id: str
    labels: dict[str, str]
    monthly_budget_nanos: int | None
    revoked: bool


@dataclass
class Directory:
    generation: str
    config: AllotmentConfig | None
    tiers: dict[str, TierInfo] = field(default_factory=dict)
    teams: dict[str, TeamInfo] = field(default_factory=dict)
    people: dict[str, PersonInfo] = field(default_factory=dict)
    keys_by_hash: dict[str, KeyInfo] = field(default_factory=dict)
    label_budgets: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> value -> nanos
    _principals: dict[str, Principal] = field(default_factory=dict)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.config.org.timezone if self.config else "UTC")

    @property
    def org_id(self) -> str:
        return (self.config.org.name if self.config else "default").lower()

    @property
    def org_budget_nanos(self) -> int | None:
        if self.config is None:
            return None
        return self.config.nanos(self.config.org.monthly_budget)

    def principal_for_key(self, key_hash: str) -> Principal | None:
        cached = self._principals.get(key_hash)
        if cached is not None:
            return cached
        info = self.keys_by_hash.get(key_hash)
        if info is None or info.revoked:
            return None
        person = self.people.get(info.person_id)
        if person is None:
            return None
        principal = self.principal_for_person(person, key=info)
        self._principals[key_hash] = principal
        return principal

    def principal_for_person(self, person: PersonInfo, key: KeyInfo | None = None) -> Principal:
        team = self.teams.get(person.team_id or "")
        return Principal(
            person_id=person.id,
            email=person.email,
            team_id=person.team_id,
            tier=person.tier_id,
            key_id=key.id if key else None,
            cost_center=person.cost_center or (team.cost_center if team else None),
            level=person.level,
            default_labels=dict(key.labels) if key else {},
            kind="person" if person.status == "active" else "inactive",
        )

    def person_by_email(self, email: str) -> PersonInfo | None:
        wanted = email.strip().lower()
        for person in self.people.values():
            if person.email == wanted:
                return person
        return None


def load_directory(engine: Engine) -> Directory:
    """Read the whole directory in one read transaction."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT value FROM meta WHERE key = :k"), {"k": GENERATION_KEY}).fetchone()
        generation = "0" if row is None else str(row[0])
        doc = conn.execute(
            text("SELECT document, source FROM config_revisions ORDER BY id DESC LIMIT 1")
        ).fetchone()
        config = parse_config(doc[0], doc[1]) if doc is not None else None
        directory = Directory(generation=generation, config=config)
        for r in conn.execute(
            text("SELECT id, name, monthly_budget_nanos, allow, max_request_tokens FROM tiers")
        ):
            directory.tiers[r[0]] = TierInfo(
                r[0], r[1], _int(r[2]), Allowlist(orjson.loads(r[3])), _int(r[4])
            )
        for r in conn.execute(
            text("SELECT id, name, cost_center, monthly_budget_nanos FROM teams WHERE active")
        ):
            directory.teams[r[0]] = TeamInfo(r[0], r[1], r[2], _int(r[3]))
        for r in conn.execute(
            text(
                "SELECT id, email, name, team_id, tier_id, level, cost_center, "
                "monthly_budget_nanos, status FROM people"
            )
        ):
            directory.people[r[0]] = PersonInfo(
                r[0], r[1], r[2], r[3], r[4], _int(r[5]), r[6], _int(r[7]), r[8]
            )
        for r in conn.execute(
            text("SELECT id, key_hash, person_id, labels, monthly_budget_nanos, revoked_at FROM api_keys")
        ):
            directory.keys_by_hash[r[1]] = KeyInfo(
                r[0], r[2], orjson.loads(r[3]), _int(r[4]), r[5] is not None
            )
        for r in conn.execute(
            text("SELECT scope_id, monthly_budget_nanos FROM budgets WHERE scope = 'label'")
        ):
            key, _, value = str(r[0]).partition("=")
            directory.label_budgets.setdefault(key, {})[value] = int(r[1])
    return directory


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def period_bounds(at: datetime, tz: ZoneInfo) -> tuple[str, datetime, datetime]:
    """The calendar month containing ``at`` in the org's time zone, as UTC bounds."""
    local = at.astimezone(tz)
    start_local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start_local.month == 12:
        end_local = start_local.replace(year=start_local.year + 1, month=1)
    else:
        end_local = start_local.replace(month=start_local.month + 1)
    return (
        f"{start_local.year:04d}-{start_local.month:02d}",
        start_local.astimezone(UTC),
        end_local.astimezone(UTC),
    )


def period_bounds_for_key(period: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC bounds of the month ``YYYY-MM`` in the org's time zone."""
    try:
        year, month = (int(part) for part in period.split("-"))
        first = datetime(year, month, 1, tzinfo=tz)
    except ValueError:
        raise ValueError(f"a period is YYYY-MM, got {period!r}") from None
    _, start, end = period_bounds(first, tz)
    return start, end
