"""Apply what HR systems report to people and keys: joiners, movers and leavers, all or nothing.

``allotment sync`` and the ``sync-directory`` job call ``run_sync``; a dry run writes nothing.
"""

from __future__ import annotations

import fnmatch
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, text

from allotment.admin import KEY_PREFIX, bump_generation
from allotment.directory import hash_key, person_id_for
from allotment.errors import AllotmentError, ConfigError
from allotment.types import DirectoryChanges, DirectoryPerson

if TYPE_CHECKING:
    from allotment.config import AllotmentConfig
    from allotment.runtime import Runtime

CHECKPOINT = "sync-directory"
MOVE_FIELDS = ("team_id", "tier_id", "cost_center")
UPDATE_FIELDS = ("name", "level", "manager_email", "external_id", "email")
_PERSON_COLUMNS = (
    "id",
    "email",
    "name",
    "team_id",
    "tier_id",
    "level",
    "cost_center",
    "status",
    "source",
    "external_id",
    "manager_email",
)


class SyncFailed(AllotmentError):
    """An HR system could not be read completely; nothing was applied."""

    status = 502
    code = "sync_failed"
    type = "server_error"


@dataclass(frozen=True, slots=True)
class TierRule:
    """``department``/``title`` (case-insensitive globs) and a level range place a person."""

    tier: str
    team: str
    department: str | None = None
    title: str | None = None
    min_level: int | None = None
    max_level: int | None = None
    cost_center: str | None = None
    source: str | None = None  # restrict the rule to one HR system

    def matches(self, person: DirectoryPerson, source: str) -> bool:
        if self.source is not None and self.source != source:
            return False
        if self.department is not None and not _glob(person.department, self.department):
            return False
        if self.title is not None and not _glob(person.title, self.title):
            return False
        if self.min_level is not None or self.max_level is not None:
            # a rule about levels never places someone whose level is unknown
            if person.level is None:
                return False
            if self.min_level is not None and person.level < self.min_level:
                return False
            if self.max_level is not None and person.level > self.max_level:
                return False
        return True


def _glob(value: str | None, pattern: str) -> bool:
    return value is not None and fnmatch.fnmatchcase(value.strip().lower(), pattern.strip().lower())


@dataclass(frozen=True, slots=True)
class SyncSettings:
    rules: tuple[TierRule, ...] = ()
    issue_keys: bool = False
    every_seconds: float = 3600.0


_RULE_KEYS = {"tier", "team", "department", "title", "min_level", "max_level", "cost_center", "source"}


def load_settings(config: AllotmentConfig | None) -> SyncSettings:
    """Read ``plugins.sync`` and check every rule names a configured tier and team."""
    if config is None:
        raise ConfigError("no configuration applied yet: run `allotment apply -f allotment.yaml` first")
    raw = config.plugins.get("sync") or {}
    if not isinstance(raw, dict):
        raise ConfigError("plugins.sync must be a mapping with `rules:`")
    rules = []
    for index, item in enumerate(raw.get("rules") or []):
        where = f"plugins.sync.rules[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: a rule is a mapping such as {{department: Engineering, tier: ...}}")
        unknown = set(item) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_RULE_KEYS)})")
        if item.get("tier") not in config.tiers:
            raise ConfigError(f"{where}: unknown tier {item.get('tier')!r}")
        if item.get("team") not in config.teams:
            raise ConfigError(f"{where}: unknown team {item.get('team')!r}")
        for bound in ("min_level", "max_level"):
            if item.get(bound) is not None and not isinstance(item[bound], int):
                raise ConfigError(f"{where}: {bound} must be an integer")
        rules.append(TierRule(**item))
    every = raw.get("every_seconds", 3600)
    if not isinstance(every, int | float) or every <= 0:
        raise ConfigError("plugins.sync.every_seconds must be a positive number")
    return SyncSettings(tuple(rules), bool(raw.get("issue_keys", False)), float(every))


@dataclass(frozen=True, slots=True)
class Change:
    action: str  # join | rejoin | move | update | leave
    email: str
    source: str
    person_id: str
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "email": self.email,
            "source": self.source,
            "person_id": self.person_id,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A record the rules cannot place (or that conflicts): reported, never guessed."""

    source: str
    email: str | None
    external_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "email": self.email,
            "external_id": self.external_id,
            "reason": self.reason,
        }


@dataclass
class SyncPlan:
    since: datetime | None
    started_at: datetime
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> complete, cursor, count
    changes: list[Change] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in ("join", "rejoin", "move", "update", "leave")}
        for change in self.changes:
            out[change.action] += 1
        out["unplaced"] = len(self.unplaced)
        out["skipped"] = len(self.skipped)
        return out


@dataclass
class SyncResult:
    plan: SyncPlan
    dry_run: bool
    revoked_keys: int = 0
    issued_keys: list[dict[str, str]] = field(default_factory=list)  # secrets shown once

    def to_dict(self, *, show_secrets: bool = True) -> dict[str, Any]:
        keys = (
            self.issued_keys
            if show_secrets
            else [{k: v for k, v in item.items() if k != "key"} for item in self.issued_keys]
        )
        return {
            "dry_run": self.dry_run,
            "applied": not self.dry_run,
            "since": self.plan.since.isoformat() if self.plan.since else None,
            "started_at": self.plan.started_at.isoformat(),
            "sources": self.plan.sources,
            "counts": self.plan.counts(),
            "changes": [c.to_dict() for c in self.plan.changes],
            "unplaced": [u.to_dict() for u in self.plan.unplaced],
            "skipped": self.plan.skipped,
            "revoked_keys": self.revoked_keys,
            "issued_keys": keys,
        }


# -- reading the HR systems and the current directory ----------------------------------
def fetch_changes(rt: Runtime, since: datetime | None) -> list[DirectoryChanges]:
    """Ask every HRIS plugin; any failure aborts the sync before a single write."""
    plugin_config = dict(rt.config.plugins) if rt.config is not None else {}
    try:
        results = rt.hooks.sync_directory(since, plugin_config)
    except AllotmentError as exc:
        raise SyncFailed(
            f"directory sync aborted, nothing applied: {exc.message}", details={"cause": exc.code}
        ) from exc
    except Exception as exc:  # a plugin bug must not leave a half-applied directory either
        raise SyncFailed(f"directory sync aborted, nothing applied: {type(exc).__name__}: {exc}") from exc
    sources = [r.source for r in results]
    if len(set(sources)) != len(sources):
        raise SyncFailed(f"two plugins reported the same source: {sources}")
    return sorted(results, key=lambda r: r.source)


def read_checkpoint(conn: Connection) -> dict[str, Any]:
    row = conn.execute(text("SELECT data FROM checkpoints WHERE name = :n"), {"n": CHECKPOINT}).fetchone()
    return {} if row is None else dict(orjson.loads(row[0]))


def _write_checkpoint(conn: Connection, data: dict[str, Any], now: datetime) -> None:
    params = {"n": CHECKPOINT, "d": orjson.dumps(data).decode(), "at": now}
    cur = conn.execute(text("UPDATE checkpoints SET data = :d, updated_at = :at WHERE name = :n"), params)
    if cur.rowcount != 1:
        conn.execute(text("INSERT INTO checkpoints (name, data, updated_at) VALUES (:n, :d, :at)"), params)


def _current_people(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(text(f"SELECT {', '.join(_PERSON_COLUMNS)} FROM people"))
    return [dict(zip(_PERSON_COLUMNS, r, strict=True)) for r in rows]


def _active_key_owners(conn: Connection) -> set[str]:
    return {
        r[0] for r in conn.execute(text("SELECT DISTINCT person_id FROM api_keys WHERE revoked_at IS NULL"))
    }


# -- planning --------------------------------------------------------------------------
def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _has_left(person: DirectoryPerson, today: date) -> bool:
    if person.status == "terminated":
        return True
    end = _date(person.end_date)
    return end is not None and end < today


def plan_changes(
    batches: list[DirectoryChanges],
    people: list[dict[str, Any]],
    key_owners: set[str],
    settings: SyncSettings,
    *,
    since: datetime | None,
    now: datetime,
    today: date,
) -> SyncPlan:
    """Compare what HR reports with the directory; pure, so a dry run and a real run agree."""
    plan = SyncPlan(since=since, started_at=now)
    by_email = {p["email"]: p for p in people}
    by_external = {(p["source"], p["external_id"]): p for p in people if p["external_id"]}
    seen_ids: set[str] = set()
    for batch in batches:
        plan.sources[batch.source] = {
            "complete": batch.complete,
            "cursor": batch.cursor,
            "records": len(batch.people),
        }
        reported: set[str] = set()
        for record in batch.people:
            current = by_external.get((batch.source, record.external_id)) if record.external_id else None
            email = (record.email or "").strip().lower()
            if current is None and email:
                current = by_email.get(email)
            if current is not None:
                reported.add(current["id"])
                if current["id"] in seen_ids:
                    plan.unplaced.append(
                        Unplaced(
                            batch.source,
                            email or current["email"],
                            record.external_id,
                            "also reported by another HR system; left unchanged",
                        )
                    )
                    continue
                seen_ids.add(current["id"])
            _plan_record(plan, batch.source, record, email, current, key_owners, settings, today, by_email)
        if batch.complete:
            for person in people:
                if (
                    person["source"] == batch.source
                    and person["id"] not in reported
                    and (person["status"] == "active" or person["id"] in key_owners)
                ):
                    plan.changes.append(_leave(person, batch.source, "absent from a complete sync"))
    return plan


def _leave(person: dict[str, Any], source: str, reason: str) -> Change:
    return Change(
        "leave",
        person["email"],
        source,
        person["id"],
        {"status": person["status"]},
        {"status": "inactive"},
        reason,
    )


def _plan_record(
    plan: SyncPlan,
    source: str,
    record: DirectoryPerson,
    email: str,
    current: dict[str, Any] | None,
    key_owners: set[str],
    settings: SyncSettings,
    today: date,
    by_email: dict[str, dict[str, Any]],
) -> None:
    if _has_left(record, today):
        if current is None:
            plan.skipped.append({"source": source, "email": email or None, "reason": "left before joining"})
        elif current["status"] == "active" or current["id"] in key_owners:
            # a termination wins over every other source: a leaver keeping access is the worst outcome
            plan.changes.append(
                _leave(
                    current,
                    source,
                    f"terminated in {source}" + (f" (end date {record.end_date})" if record.end_date else ""),
                )
            )
        return
    if not email:
        plan.unplaced.append(Unplaced(source, None, record.external_id, "no work email"))
        return
    start = _date(record.start_date)
    if current is None and start is not None and start > today:
        plan.skipped.append({"source": source, "email": email, "reason": f"starts on {start.isoformat()}"})
        return
    if current is not None and current["source"] == "config":
        plan.skipped.append({"source": source, "email": email, "reason": "managed by allotment.yaml"})
        return
    rule = next((r for r in settings.rules if r.matches(record, source)), None)
    if rule is None:
        plan.unplaced.append(
            Unplaced(
                source,
                email,
                record.external_id,
                f"no rule places department={record.department!r} title={record.title!r} "
                f"level={record.level!r}",
            )
        )
        return
    after = {
        "email": email,
        "name": record.name,
        "team_id": rule.team,
        "tier_id": rule.tier,
        "level": record.level,
        "cost_center": record.cost_center or rule.cost_center,
        "manager_email": (record.manager_email or "").strip().lower() or None,
        "external_id": record.external_id,
    }
    if current is None:
        plan.changes.append(
            Change(
                "join",
                email,
                source,
                person_id_for(email),
                {},
                after,
                f"new in {source}: rule {rule.department or rule.title or '*'} -> {rule.tier}",
            )
        )
        return
    if email != current["email"] and email in by_email:
        plan.unplaced.append(
            Unplaced(
                source,
                email,
                record.external_id,
                f"email changed from {current['email']} to one another person has",
            )
        )
        return
    before = {k: current[k] for k in after}
    diff_before = {k: v for k, v in before.items() if after[k] != v}
    diff_after = {k: after[k] for k in diff_before}
    if current["status"] != "active":
        plan.changes.append(
            Change(
                "rejoin",
                email,
                source,
                current["id"],
                {**diff_before, "status": current["status"]},
                {**diff_after, "status": "active"},
                f"active again in {source}",
            )
        )
    elif any(k in diff_before for k in MOVE_FIELDS):
        plan.changes.append(
            Change("move", email, source, current["id"], diff_before, diff_after, f"moved in {source}")
        )
    elif diff_before:
        plan.changes.append(
            Change(
                "update",
                email,
                source,
                current["id"],
                diff_before,
                diff_after,
                f"details changed in {source}",
            )
        )


# -- applying --------------------------------------------------------------------------
def _apply_change(conn: Connection, change: Change, now: datetime) -> int:
    """Write one change; returns the number of keys revoked."""
    if change.action == "leave":
        conn.execute(
            text("UPDATE people SET status = 'inactive', updated_at = :at WHERE id = :id"),
            {"at": now, "id": change.person_id},
        )
        cur = conn.execute(
            text("UPDATE api_keys SET revoked_at = :at WHERE person_id = :p AND revoked_at IS NULL"),
            {"at": now, "p": change.person_id},
        )
        return int(cur.rowcount or 0)
    values = {**change.after, "source": change.source, "updated_at": now}
    if change.action in ("join", "rejoin"):
        values["status"] = "active"
    if change.action == "join":
        columns = ["id", *values]
        conn.execute(
            text(f"INSERT INTO people ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"),
            {"id": change.person_id, **values},
        )
    else:
        assignments = ", ".join(f"{c} = :{c}" for c in values)
        conn.execute(
            text(f"UPDATE people SET {assignments} WHERE id = :id"), {**values, "id": change.person_id}
        )
    return 0


def _issue_key(conn: Connection, person_id: str, email: str, source: str, now: datetime) -> dict[str, str]:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    conn.execute(
        text(
            "INSERT INTO api_keys (id, key_hash, prefix, person_id, name, labels, created_at) "
            "VALUES (:id, :h, :p, :pid, :n, '{}', :at)"
        ),
        {
            "id": key_id,
            "h": hash_key(secret),
            "p": secret[: len(KEY_PREFIX) + 4],
            "pid": person_id,
            "n": f"issued by {source} sync",
            "at": now,
        },
    )
    return {"email": email, "key_id": key_id, "key": secret}


def run_sync(
    rt: Runtime, *, dry_run: bool = False, full: bool = False, now: datetime | None = None
) -> SyncResult:
    """Fetch from every HRIS plugin, then plan and apply in one transaction (or only plan)."""
    now = now or datetime.now(UTC)
    settings = load_settings(rt.config)
    with rt.engine.connect() as conn:
        checkpoint = read_checkpoint(conn)
    since = (
        None
        if full or not checkpoint.get("last_success")
        else datetime.fromisoformat(checkpoint["last_success"])
    )
    batches = fetch_changes(rt, since)  # network first: a vendor failure aborts before any write
    today = now.astimezone(rt.directory.timezone).date()
    if dry_run:
        with rt.engine.connect() as conn:
            plan = plan_changes(
                batches,
                _current_people(conn),
                _active_key_owners(conn),
                settings,
                since=since,
                now=now,
                today=today,
            )
        return SyncResult(plan, dry_run=True)
    result: SyncResult
    with rt.write_engine.begin() as conn:
        # planned again inside the write transaction so a concurrent admin write cannot be lost
        plan = plan_changes(
            batches,
            _current_people(conn),
            _active_key_owners(conn),
            settings,
            since=since,
            now=now,
            today=today,
        )
        result = SyncResult(plan, dry_run=False)
        for change in plan.changes:
            result.revoked_keys += _apply_change(conn, change, now)
            if settings.issue_keys and change.action == "join":
                result.issued_keys.append(
                    _issue_key(conn, change.person_id, change.email, change.source, now)
                )
        cursors = dict(checkpoint.get("cursors") or {})
        cursors.update({s: info["cursor"] for s, info in plan.sources.items() if info["cursor"]})
        _write_checkpoint(conn, {"last_success": now.isoformat(), "cursors": cursors}, now)
        if plan.changes:
            bump_generation(conn)  # running gateways reload: a revoked key is refused on the next request
    rt.refresh_directory()
    return result
