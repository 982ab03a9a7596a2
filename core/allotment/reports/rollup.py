"""Daily rollups of ``usage_events`` and the reads that add the raw tail past the watermark.

Folding is incremental by event id; a report is rollup rows (ids <= watermark) + raw rows past it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from allotment.reports.periods import day_start_utc

if TYPE_CHECKING:
    from allotment.runtime import Runtime

STATE_NAME = "usage"
METRICS: dict[str, str] = {
    "requests": "SUM(CASE WHEN kind = 'usage' THEN 1 ELSE 0 END)",
    "errors": "SUM(CASE WHEN kind = 'usage' AND outcome = 'error' THEN 1 ELSE 0 END)",
    "retries": "SUM(CASE WHEN kind = 'usage' AND retry_of IS NOT NULL THEN 1 ELSE 0 END)",
    "batch_requests": "SUM(CASE WHEN kind = 'usage' AND endpoint_mode = 'batch' THEN 1 ELSE 0 END)",
    "tool_requests": "SUM(CASE WHEN kind = 'usage' AND tool_calls > 0 THEN 1 ELSE 0 END)",
    "unpriced_requests": "SUM(CASE WHEN kind = 'usage' AND flags LIKE '%unpriced%' THEN 1 ELSE 0 END)",
    "input_tokens": "SUM(input_tokens)",
    "cache_read_tokens": "SUM(cache_read_tokens)",
    "cache_write_tokens": "SUM(cache_write_tokens + cache_write_1h_tokens)",
    "output_tokens": "SUM(output_tokens)",
    "cost_nanos": "SUM(cost_nanos)",
}


@dataclass(frozen=True)
class RollupSpec:
    table: str
    dims: tuple[tuple[str, str], ...]  # (rollup column, expression over usage_events)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dims)


TEAM = RollupSpec(
    "rollup_team_day",
    (
        ("team_id", "COALESCE(team_id, '')"),
        ("cost_center", "COALESCE(cost_center, '')"),
        ("provider", "provider"),
        ("model", "model"),
        ("enforced", "enforced"),
    ),
)
PERSON = RollupSpec(
    "rollup_person_day",
    (
        ("person_id", "COALESCE(person_id, '')"),
        ("team_id", "COALESCE(team_id, '')"),
        ("enforced", "enforced"),
    ),
)
LABELS = RollupSpec(
    "rollup_label_day",
    (("labels", "labels"), ("provider", "provider"), ("model", "model"), ("enforced", "enforced")),
)
SPECS = (TEAM, PERSON, LABELS)

Fact = dict[str, Any]


@functools.lru_cache(maxsize=64)
def _whole_hour_offsets(tz: ZoneInfo) -> bool:
    year = datetime.now(UTC).year
    for y in range(year - 5, year + 3):
        for month in range(1, 13):
            offset = datetime(y, month, 15, tzinfo=tz).utcoffset()
            if offset is None or offset.total_seconds() % 3600:
                return False
    return True


def _bucket(dialect: str, tz: ZoneInfo) -> tuple[str, Callable[[Any], str]]:
    """SQL grouping a timestamp into a bucket, and the bucket's org-local day in Python."""
    if dialect == "postgresql":
        return "to_char(ts AT TIME ZONE :tz, 'YYYY-MM-DD')", str
    # SQLite has no time zones: group by UTC hour (minute for half-hour zones) and fold here
    width, fmt = (13, "%Y-%m-%d %H") if _whole_hour_offsets(tz) else (16, "%Y-%m-%d %H:%M")
    cache: dict[str, str] = {}

    def fold(bucket: Any) -> str:
        key = str(bucket)
        day = cache.get(key)
        if day is None:
            instant = datetime.strptime(key, fmt).replace(tzinfo=UTC)
            day = cache[key] = instant.astimezone(tz).date().isoformat()
        return day

    return f"substr(ts, 1, {width})", fold


def _normalize(spec: RollupSpec, values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(bool(v) if name == "enforced" else v for name, v in zip(spec.names, values, strict=True))


def _aggregate_events(
    conn: Connection, spec: RollupSpec, tz: ZoneInfo, where: str, params: dict[str, Any]
) -> dict[tuple[Any, ...], list[int]]:
    """Raw events matching ``where`` summed per (local day, dims)."""
    bucket, fold = _bucket(conn.dialect.name, tz)
    dims = ", ".join(expr for _, expr in spec.dims)
    metrics = ", ".join(METRICS.values())
    group = ", ".join(str(i) for i in range(1, len(spec.dims) + 2))
    sql = f"SELECT {bucket}, {dims}, {metrics} FROM usage_events WHERE {where} GROUP BY {group}"
    out: dict[tuple[Any, ...], list[int]] = {}
    width = len(spec.dims) + 1
    for row in conn.execute(text(sql), {**params, "tz": tz.key}):
        key = (fold(row[0]), *_normalize(spec, row[1:width]))
        values = [int(v or 0) for v in row[width:]]
        have = out.get(key)
        if have is None:
            out[key] = values
        else:
            for i, v in enumerate(values):
                have[i] += v
    return out


def _read_state(conn: Connection, lock: bool = False) -> tuple[int, str | None]:
    suffix = " FOR UPDATE" if lock and conn.dialect.name == "postgresql" else ""
    row = conn.execute(
        text(f"SELECT last_event_id, timezone FROM rollup_state WHERE name = :n{suffix}"),
        {"n": STATE_NAME},
    ).fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def _stable_max_id(rt: Runtime) -> int:
    """The highest event id below which every id is committed or will never exist."""
    with rt.write_engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # ids come from a sequence before commit; a SHARE lock waits out in-flight inserts
            conn.execute(text("LOCK TABLE usage_events IN SHARE MODE"))
        return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM usage_events")).scalar_one())


def reset(rt: Runtime) -> None:
    """Forget every rollup (e.g. after a time-zone change); the next refresh rebuilds them."""
    with rt.write_engine.begin() as conn:
        for spec in SPECS:
            conn.execute(text(f"DELETE FROM {spec.table}"))
        conn.execute(text("DELETE FROM rollup_state WHERE name = :n"), {"n": STATE_NAME})


def refresh(rt: Runtime, *, chunk: int = 1_000_000) -> dict[str, Any]:
    """Fold events past the watermark into the rollups, ``chunk`` ids per short write."""
    tz = rt.directory.timezone
    with rt.engine.connect() as conn:
        last, zone = _read_state(conn)
    if zone is not None and zone != tz.key:
        reset(rt)
        last = 0
    high = _stable_max_id(rt)
    folded = 0
    while last < high:
        upper = min(high, last + chunk)
        # aggregate in a read transaction: on SQLite it never holds the ledger's write lock
        with rt.engine.connect() as conn:
            batches = {
                spec: _aggregate_events(conn, spec, tz, "id > :lo AND id <= :hi", {"lo": last, "hi": upper})
                for spec in SPECS
            }
        with rt.write_engine.begin() as conn:
            current, _ = _read_state(conn, lock=True)
            if current != last:  # another process folded this range first
                last = current
                continue
            for spec, rows in batches.items():
                _upsert(conn, spec, rows)
            _write_state(conn, upper, tz.key, existed=zone is not None or last > 0)
        zone = tz.key
        folded += upper - last
        last = upper
    return {"watermark": last, "ids_folded": folded}


def _upsert(conn: Connection, spec: RollupSpec, rows: dict[tuple[Any, ...], list[int]]) -> None:
    if not rows:
        return
    cols = ("day", *spec.names, *METRICS)
    names = ", ".join(cols)
    marks = ", ".join(f":{c}" for c in cols)
    keys = ", ".join(("day", *spec.names))
    updates = ", ".join(f"{m} = {spec.table}.{m} + excluded.{m}" for m in METRICS)
    sql = text(
        f"INSERT INTO {spec.table} ({names}) VALUES ({marks}) ON CONFLICT ({keys}) DO UPDATE SET {updates}"
    )
    conn.execute(sql, [dict(zip(cols, (*key, *values), strict=True)) for key, values in rows.items()])


def _write_state(conn: Connection, watermark: int, zone: str, *, existed: bool) -> None:
    params = {"n": STATE_NAME, "w": watermark, "z": zone, "t": datetime.now(UTC).replace(tzinfo=None)}
    updated = conn.execute(
        text("UPDATE rollup_state SET last_event_id = :w, timezone = :z, updated_at = :t WHERE name = :n"),
        params,
    ).rowcount
    if not updated:
        conn.execute(
            text(
                "INSERT INTO rollup_state (name, last_event_id, timezone, updated_at) VALUES (:n, :w, :z, :t)"
            ),
            params,
        )


def read_facts(
    rt: Runtime,
    spec: RollupSpec,
    start: date,
    end: date,
    *,
    by_day: bool = False,
    keep: tuple[str, ...] | None = None,
) -> list[Fact]:
    """Summed facts per dims (and per local day with ``by_day``) for local days [start, end).

    ``keep`` groups by a subset of the dims only, so the database returns fewer rows.
    """
    tz = rt.directory.timezone
    kept = keep or spec.names
    picks = [spec.names.index(name) for name in kept]
    with rt.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # one snapshot for watermark, rollup and tail, so a concurrent fold is never double-counted
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            last, zone = _read_state(conn)
            if zone != tz.key:
                last = 0  # rollups built for another zone are ignored until rebuilt
            merged: dict[tuple[Any, ...], list[int]] = {}
            if last > 0:
                for key, values in _rollup_rows(conn, spec, kept, start, end, by_day):
                    _add(merged, key, values)
            ts0 = rt.ledger.ts(day_start_utc(start, tz))
            ts1 = rt.ledger.ts(day_start_utc(end, tz))
            # the tail is the few events past the watermark: walk the primary key, not the ts index
            ts = "+ts" if conn.dialect.name == "sqlite" and last > 0 else "ts"
            tail = _aggregate_events(
                conn, spec, tz, f"id > :lo AND {ts} >= :t0 AND {ts} < :t1", {"lo": last, "t0": ts0, "t1": ts1}
            )
            for key, values in tail.items():
                projected = tuple(key[1 + i] for i in picks)
                _add(merged, (key[0], *projected) if by_day else projected, values)
    names = ("day", *kept) if by_day else kept
    return [
        {**dict(zip(names, key, strict=True)), **dict(zip(METRICS, values, strict=True))}
        for key, values in merged.items()
    ]


def _rollup_rows(
    conn: Connection, spec: RollupSpec, kept: tuple[str, ...], start: date, end: date, by_day: bool
) -> Iterable[tuple[tuple[Any, ...], list[int]]]:
    dims = ", ".join(("day", *kept) if by_day else kept)
    sums = ", ".join(f"SUM({m})" for m in METRICS)
    sql = f"SELECT {dims}, {sums} FROM {spec.table} WHERE day >= :a AND day < :b GROUP BY {dims}"
    lead = 1 if by_day else 0
    width = len(kept) + lead
    for row in conn.execute(text(sql), {"a": start.isoformat(), "b": end.isoformat()}):
        key = (
            *row[:lead],
            *(bool(v) if n == "enforced" else v for n, v in zip(kept, row[lead:width], strict=True)),
        )
        yield key, [int(v or 0) for v in row[width:]]


def _add(into: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], values: list[int]) -> None:
    have = into.get(key)
    if have is None:
        into[key] = list(values)
    else:
        for i, v in enumerate(values):
            have[i] += v


def total(facts: Iterable[Fact], metric: str = "cost_nanos") -> int:
    return sum(int(f[metric]) for f in facts)
