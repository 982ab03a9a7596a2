"""Per-message delivery records in the core ``checkpoints`` table: the plugin's idempotency memory.

A record says a message was sent (never send again), is failing, or is parked for the retry job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

if TYPE_CHECKING:
    from allotment.runtime import Runtime

PREFIX = "slack:msg:"
THREAD_PREFIX = "slack:thread:"


class Records:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def get(self, name: str) -> dict[str, Any] | None:
        with self.runtime.engine.connect() as conn:
            row = conn.execute(text("SELECT data FROM checkpoints WHERE name = :n"), {"n": name}).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def put(self, name: str, data: dict[str, Any]) -> None:
        payload = orjson.dumps(data).decode()
        now = datetime.now(UTC)
        with self.runtime.write_engine.begin() as conn:
            updated = conn.execute(
                text("UPDATE checkpoints SET data = :d, updated_at = :t WHERE name = :n"),
                {"d": payload, "t": now, "n": name},
            ).rowcount
            if not updated:
                conn.execute(
                    text("INSERT INTO checkpoints (name, data, updated_at) VALUES (:n, :d, :t)"),
                    {"n": name, "d": payload, "t": now},
                )

    def parked(self) -> list[tuple[str, dict[str, Any]]]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT name, data FROM checkpoints WHERE name LIKE :p ORDER BY updated_at, name"),
                {"p": PREFIX + "%"},
            ).fetchall()
        found = [(str(name), dict(orjson.loads(data))) for name, data in rows]
        return [(name, data) for name, data in found if data.get("state") == "parked"]
