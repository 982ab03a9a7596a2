"""Administrative writes and reads: applying config, issuing and revoking keys, listings.

Every write bumps the directory generation so running gateways reload on the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text

from allotment.config import AllotmentConfig, parse_config
from allotment.db.ledger import GENERATION_KEY, Ledger, parse_ts
from allotment.directory import hash_key, person_id_for
from allotment.errors import InvalidRequest, NotFound
from allotment.money import dollars_to_nanos, usd_string

KEY_PREFIX = "sk-allot-"


def _now() -> datetime:
    return datetime.now(UTC)


def bump_generation(conn: Connection) -> str:
    row = conn.execute(text("SELECT value FROM meta WHERE key = :k"), {"k": GENERATION_KEY}).fetchone()
    value = str(int(row[0]) + 1) if row is not None else "1"
    if row is None:
        conn.execute(text("INSERT INTO meta (key, value) VALUES (:k, :v)"), {"k": GENERATION_KEY, "v": value})
    else:
        conn.execute(text("UPDATE meta SET value = :v WHERE key = :k"), {"k": GENERATION_KEY, "v": value})
    return value


def _nanos(amount: Decimal | None) -> int | None:
    return None if amount is None else dollars_to_nanos(amount)


class Admin:
    """Admin services over the SQLAlchemy engine (not the hot path)."""

    def __init__(self, engine: Engine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger

    # -- config ------------------------------------------------------------------------
    def apply_text(self, document: str, source: str = "<config>") -> AllotmentConfig:
        """Validate the whole document, then apply it in one transaction (all or nothing)."""
        config = parse_config(document, source)
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO config_revisions (applied_at, sha256, source, document) "
                    "VALUES (:at, :sha, :src, :doc)"
                ),
                {
                    "at": now,
                    "sha": hashlib.sha256(document.encode()).hexdigest(),
                    "src": source[:500],
                    "doc": document,
                },
            )
            self._apply_tiers(conn, config)
            self._apply_teams(conn, config)
            self._apply_people(conn, config, now)
            conn.execute(text("DELETE FROM budgets WHERE scope = 'label'"))
            for budget in config.budgets:
                conn.execute(
                    text(
                        "INSERT INTO budgets (scope, scope_id, monthly_budget_nanos) "
                        "VALUES ('label', :sid, :n)"
                    ),
                    {"sid": budget.label, "n": dollars_to_nanos(budget.monthly_budget)},
                )
            bump_generation(conn)
        return config

    def _apply_tiers(self, conn: Connection, config: AllotmentConfig) -> None:
        existing = {r[0] for r in conn.execute(text("SELECT id FROM tiers"))}
        for tier_id, tier in config.tiers.items():
            params = {
                "id": tier_id,
                "name": tier.name or tier_id,
                "b": _nanos(tier.monthly_budget),
                "allow": orjson.dumps(tier.allow).decode(),
                "mrt": tier.max_request_tokens,
            }
            if tier_id in existing:
                conn.execute(
                    text(
                        "UPDATE tiers SET name=:name, monthly_budget_nanos=:b, allow=:allow, "
                        "max_request_tokens=:mrt WHERE id=:id"
                    ),
                    params,
                )
            else:
                conn.execute(
                    text(
                        "INSERT INTO tiers (id, name, monthly_budget_nanos, allow, max_request_tokens) "
                        "VALUES (:id, :name, :b, :allow, :mrt)"
                    ),
                    params,
                )
        for tier_id in existing - set(config.tiers):
            # a tier removed from the file allows nothing and grants no budget
            conn.execute(
                text("UPDATE tiers SET allow='[]', monthly_budget_nanos=NULL WHERE id=:id"),
                {"id": tier_id},
            )

    def _apply_teams(self, conn: Connection, config: AllotmentConfig) -> None:
        existing = {r[0] for r in conn.execute(text("SELECT id FROM teams"))}
        for team_id, team in config.teams.items():
            params = {
                "id": team_id,
                "name": team.name or team_id,
                "cc": team.cost_center,
                "b": _nanos(team.monthly_budget),
            }
            if team_id in existing:
                conn.execute(
                    text(
                        "UPDATE teams SET name=:name, cost_center=:cc, monthly_budget_nanos=:b, "
                        "active=:t WHERE id=:id"
                    ),
                    {**params, "t": True},
                )
            else:
                conn.execute(
                    text(
                        "INSERT INTO teams (id, name, cost_center, monthly_budget_nanos, active) "
                        "VALUES (:id, :name, :cc, :b, :t)"
                    ),
                    {**params, "t": True},
                )

    def _apply_people(self, conn: Connection, config: AllotmentConfig, now: datetime) -> None:
        existing = {r[0]: r[1] for r in conn.execute(text("SELECT email, source FROM people"))}
        listed = set()
        for person in config.people:
            listed.add(person.email)
            params = {
                "id": person_id_for(person.email),
                "email": person.email,
                "name": person.name,
                "team": person.team,
                "tier": person.tier,
                "level": person.level,
                "cc": person.cost_center,
                "b": _nanos(person.monthly_budget),
                "now": now,
            }
            if person.email in existing:
                conn.execute(
                    text(
                        "UPDATE people SET name=:name, team_id=:team, tier_id=:tier, level=:level, "
                        "cost_center=:cc, monthly_budget_nanos=:b, status='active', updated_at=:now "
                        "WHERE email=:email"
                    ),
                    params,
                )
            else:
                conn.execute(
                    text(
                        "INSERT INTO people (id, email, name, team_id, tier_id, level, cost_center, "
                        "monthly_budget_nanos, status, source, updated_at) VALUES (:id, :email, "
                        ":name, :team, :tier, :level, :cc, :b, 'active', 'config', :now)"
                    ),
                    params,
                )
        for email, source in existing.items():
            if source == "config" and email not in listed:
                conn.execute(
                    text("UPDATE people SET status='inactive', updated_at=:now WHERE email=:e"),
                    {"e": email, "now": now},
                )

    # -- keys --------------------------------------------------------------------------
    def issue_key(
        self,
        email: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        monthly_budget: Decimal | None = None,
    ) -> tuple[str, str]:
        """Issue a key for a person; the secret is returned once and stored only hashed."""
        wanted = email.strip().lower()
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        with self.engine.begin() as conn:
            row = conn.execute(
                text("SELECT id, status FROM people WHERE email = :e"), {"e": wanted}
            ).fetchone()
            if row is None:
                raise NotFound(f"no person with email {wanted!r}; add them to the config first")
            if row[1] != "active":
                raise InvalidRequest(f"{wanted} is {row[1]}; keys are issued to active people")
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, key_hash, prefix, person_id, name, labels, "
                    "monthly_budget_nanos, created_at) VALUES (:id, :h, :p, :pid, :n, :l, :b, :at)"
                ),
                {
                    "id": key_id,
                    "h": hash_key(secret),
                    "p": secret[: len(KEY_PREFIX) + 4],
                    "pid": row[0],
                    "n": name,
                    "l": orjson.dumps(labels or {}).decode(),
                    "b": _nanos(monthly_budget),
                    "at": _now(),
                },
            )
            bump_generation(conn)
        return secret, key_id

    def revoke_key(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            cur = conn.execute(
                text("UPDATE api_keys SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL"),
                {"at": _now(), "id": key_id},
            )
            if cur.rowcount != 1:
                exists = conn.execute(
                    text("SELECT 1 FROM api_keys WHERE id = :id"), {"id": key_id}
                ).fetchone()
                if exists is None:
                    raise NotFound(f"no key {key_id!r}")
                return  # already revoked: revoking is idempotent
            bump_generation(conn)

    def revoke_person_keys(self, conn: Connection, person_id: str, at: datetime) -> int:
        cur = conn.execute(
            text("UPDATE api_keys SET revoked_at = :at WHERE person_id = :p AND revoked_at IS NULL"),
            {"at": at, "p": person_id},
        )
        return int(cur.rowcount or 0)

    def list_keys(self, email: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT k.id, k.prefix, p.email, k.name, k.labels, k.monthly_budget_nanos, "
            "k.created_at, k.revoked_at FROM api_keys k JOIN people p ON p.id = k.person_id"
        )
        params: dict[str, Any] = {}
        if email:
            sql += " WHERE p.email = :e"
            params["e"] = email.strip().lower()
        sql += " ORDER BY k.created_at, k.id"
        with self.engine.connect() as conn:
            return [
                {
                    "key_id": r[0],
                    "prefix": r[1],
                    "email": r[2],
                    "name": r[3],
                    "labels": orjson.loads(r[4]),
                    "monthly_budget_usd": None if r[5] is None else usd_string(int(r[5])),
                    "created_at": _iso(r[6]),
                    "revoked_at": _iso(r[7]),
                    "status": "revoked" if r[7] is not None else "active",
                }
                for r in conn.execute(text(sql), params)
            ]

    # -- listings ----------------------------------------------------------------------
    def people(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                {
                    "person_id": r[0],
                    "email": r[1],
                    "name": r[2],
                    "team": r[3],
                    "tier": r[4],
                    "level": r[5],
                    "status": r[6],
                    "source": r[7],
                }
                for r in conn.execute(
                    text(
                        "SELECT id, email, name, team_id, tier_id, level, status, source "
                        "FROM people ORDER BY email"
                    )
                )
            ]

    def teams(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                {
                    "team": r[0],
                    "name": r[1],
                    "cost_center": r[2],
                    "monthly_budget_usd": None if r[3] is None else usd_string(int(r[3])),
                }
                for r in conn.execute(
                    text("SELECT id, name, cost_center, monthly_budget_nanos FROM teams ORDER BY id")
                )
            ]

    def tiers(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                {
                    "tier": r[0],
                    "name": r[1],
                    "monthly_budget_usd": None if r[2] is None else usd_string(int(r[2])),
                    "allow": orjson.loads(r[3]),
                    "max_request_tokens": r[4],
                }
                for r in conn.execute(
                    text(
                        "SELECT id, name, monthly_budget_nanos, allow, max_request_tokens "
                        "FROM tiers ORDER BY id"
                    )
                )
            ]

    def budgets(self, period: str | None = None) -> list[dict[str, Any]]:
        """Wallet states: limit, spent, reserved, available, usage % and status."""
        out = []
        for w in self.ledger.all_wallets(period):
            used = w.spent_nanos + w.reserved_nanos
            percent = (Decimal(used) * 100 / w.limit_nanos) if w.limit_nanos else Decimal(0)
            status = "blocked" if used >= w.limit_nanos else "warning" if percent >= 80 else "ok"
            out.append(
                {
                    "wallet_id": w.id,
                    "scope": w.scope,
                    "scope_id": w.scope_id,
                    "period": w.period,
                    "limit_usd": usd_string(w.limit_nanos),
                    "spent_usd": usd_string(w.spent_nanos),
                    "reserved_usd": usd_string(w.reserved_nanos),
                    "available_usd": usd_string(w.available_nanos),
                    "limit_nanos": w.limit_nanos,
                    "spent_nanos": w.spent_nanos,
                    "reserved_nanos": w.reserved_nanos,
                    "used_percent": f"{percent.quantize(Decimal('0.1'))}",
                    "status": status,
                    "resets_at": w.period_end.isoformat(),
                }
            )
        return out

    def record_outcome(
        self,
        *,
        request_id: str | None = None,
        trace_id: str | None = None,
        outcome: str,
        value_usd: Decimal | None = None,
        labels: dict[str, str] | None = None,
    ) -> int:
        if not request_id and not trace_id:
            raise InvalidRequest("an outcome names a request_id or a trace_id")
        if not outcome or len(outcome) > 50:
            raise InvalidRequest("outcome must be 1-50 characters (e.g. accepted, failed)")
        with self.engine.begin() as conn:
            cur = conn.execute(
                text(
                    "INSERT INTO outcomes (request_id, trace_id, outcome, value_nanos, labels, ts) "
                    "VALUES (:r, :t, :o, :v, :l, :ts) RETURNING id"
                ),
                {
                    "r": request_id,
                    "t": trace_id,
                    "o": outcome,
                    "v": _nanos(value_usd),
                    "l": orjson.dumps(labels or {}).decode(),
                    "ts": _now(),
                },
            )
            return int(cur.scalar_one())


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return parse_ts(value).isoformat()
