"""The anomaly detector: spend spikes, token ceilings, retry storms and verbose extraction.

``detect(runtime, now)`` reads the ledger and queues ``anomaly_detected`` through the outbox.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.db.ledger import parse_ts
from allotment.money import nanos_to_dollars
from allotment.types import Anomaly

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from allotment.runtime import Runtime

RULE_VERSION = "1"
RULES = ("spend_spike", "token_ceiling", "retry_rate", "output_ratio", "unsettled_holds")


@dataclass(frozen=True)
class DetectorSettings:
    """``plugins: {anomaly: {...}}`` in allotment.yaml; every key is optional."""

    spike_ratio: float = 1.5  # today's spend over the moving daily average
    window_days: int = 30
    min_history_days: int = 7  # a scope younger than this has no meaningful average
    min_spend_usd: float = 1.0  # ignore spikes smaller than this in absolute terms
    label_scopes: tuple[str, ...] = ("feature", "workflow", "service")
    token_ceiling: int = 200_000  # total tokens (input classes + output) of one request
    retry_rate: float = 0.10
    prompt_label: str = "prompt_version"
    min_requests: int = 20  # below this a retry rate is noise
    output_ratio: float = 3.0
    task_label: str = "task"
    compact_tasks: tuple[str, ...] = ("extraction", "classification")
    min_ratio_requests: int = 5
    repeat_hours: int = 6  # a persisting anomaly is re-sent (a repeat) at most this often
    disabled: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, data: dict[str, Any] | None) -> DetectorSettings:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            from allotment.errors import ConfigError

            raise ConfigError(f"plugins.anomaly: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        for name in ("label_scopes", "compact_tasks", "disabled"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class _Row:
    request_id: str
    kind: str
    at: datetime
    day: date
    team_id: str | None
    key_id: str | None
    person_id: str | None
    provider: str
    model: str
    endpoint_mode: str
    total_input: int
    output: int
    cost: int
    labels: dict[str, str]
    trace_id: str | None
    retry_of: str | None


@dataclass
class _Scope:
    today: list[_Row] = field(default_factory=list)
    history: dict[date, int] = field(default_factory=lambda: defaultdict(int))


def dedup_key(tenant: str, rule: str, scope: str, scope_id: str, bucket: str) -> str:
    """One key per anomaly episode: the same scope, rule and window always gives the same key."""
    raw = f"{tenant}|{rule}|{scope}:{scope_id}|{bucket}|{RULE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _usd(nanos: int) -> str:
    return f"${nanos_to_dollars(nanos):,.2f}"


def _rows_between(runtime: Runtime, sql: str, start: datetime, end: datetime) -> list[Any]:
    """The rows of ``sql`` with ``:t0`` and ``:t1`` bound to ``start`` and ``end``."""
    params = {"t0": runtime.ledger.ts(start), "t1": runtime.ledger.ts(end)}
    with runtime.engine.connect() as conn:
        return list(conn.execute(text(sql), params).fetchall())


def _load(runtime: Runtime, start: datetime, end: datetime, tz: ZoneInfo) -> list[_Row]:
    sql = (
        "SELECT request_id, kind, ts, team_id, key_id, person_id, provider, model, endpoint_mode, "
        "input_tokens + cache_read_tokens + cache_write_tokens + cache_write_1h_tokens, output_tokens, "
        "cost_nanos, labels, trace_id, retry_of FROM usage_events WHERE ts >= :t0 AND ts < :t1"
    )
    out = []
    for r in _rows_between(runtime, sql, start, end):
        at = parse_ts(r[2])
        out.append(
            _Row(
                r[0],
                r[1],
                at,
                at.astimezone(tz).date(),
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                int(r[9]),
                int(r[10]),
                int(r[11]),
                dict(orjson.loads(r[12] or "{}")),
                r[13],
                r[14],
            )
        )
    return out


@dataclass(frozen=True)
class _ExpiredHold:
    request_id: str
    amount_nanos: int
    expired_at: datetime
    key_id: str | None
    person_id: str | None
    model: str  # provider/model


def _expired_unsettled(runtime: Runtime, start: datetime, end: datetime) -> list[_ExpiredHold]:
    """Holds that expired in [start, end) and were never settled: admitted calls with no
    usage event (a late settle after expiry writes one, and then the call is not listed)."""
    sql = (
        "SELECT r.request_id, r.amount_nanos, r.expires_at, r.context FROM reservations r "
        "WHERE r.state = 'expired' AND r.expires_at >= :t0 AND r.expires_at < :t1 "
        "AND NOT EXISTS (SELECT 1 FROM usage_events e WHERE e.request_id = r.request_id)"
    )
    out = []
    for request_id, amount, expires_at, context_text in _rows_between(runtime, sql, start, end):
        context = orjson.loads(context_text or "{}")
        intent = context.get("intent") or {}
        principal = context.get("principal") or {}
        out.append(
            _ExpiredHold(
                request_id,
                int(amount),
                parse_ts(expires_at),
                principal.get("key_id"),
                principal.get("person_id"),
                f"{intent.get('provider')}/{intent.get('model')}",
            )
        )
    return out


def _evidence(rows: Iterable[_Row]) -> dict[str, Any]:
    """What a ticket needs: the costliest request type and the trace ids behind the spend."""
    usage = [r for r in rows if r.kind == "usage"]
    types: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in usage:
        task = r.labels.get("task") or r.labels.get("feature") or "-"
        agg = types[(r.provider, r.model, r.endpoint_mode, task)]
        agg[0] += r.cost
        agg[1] += 1
    top: dict[str, Any] | None = None
    if types:
        (provider, model, mode, task), (cost, count) = max(types.items(), key=lambda kv: (kv[1][0], kv[0]))
        top = {
            "provider": provider,
            "model": model,
            "endpoint_mode": mode,
            "task": task,
            "cost_nanos": cost,
            "cost_usd": str(nanos_to_dollars(cost)),
            "requests": count,
        }
    by_trace: dict[str, int] = defaultdict(int)
    for r in usage:
        if r.trace_id:
            by_trace[r.trace_id] += r.cost
    costly = sorted(usage, key=lambda r: (-r.cost, r.request_id))[:5]
    return {
        "top_request_type": top,
        "trace_ids": [t for t, _ in sorted(by_trace.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
        "request_ids": [r.request_id for r in costly],
        "requests": len(usage),
    }


class Detector:
    """One evaluation of every rule at ``now``; ``run`` queues what it finds."""

    def __init__(self, runtime: Runtime, settings: DetectorSettings, now: datetime) -> None:
        self.runtime = runtime
        self.settings = settings
        self.now = now.astimezone(UTC)
        self.tz = runtime.directory.timezone
        self.tenant = runtime.directory.org_id if runtime.config is not None else "default"
        self.today = self.now.astimezone(self.tz).date()
        self.day_start = datetime.combine(self.today, time(), self.tz).astimezone(UTC)

    def anomaly(
        self, rule: str, scope: str, scope_id: str, severity: str, summary: str, details: dict[str, Any]
    ) -> Anomaly:
        details = {
            "rule_version": RULE_VERSION,
            "window": {"start": self.day_start.isoformat(), "end": self.now.isoformat()},
            "day": self.today.isoformat(),
            **details,
        }
        key = dedup_key(self.tenant, rule, scope, scope_id, self.today.isoformat())
        return Anomaly(rule, scope, scope_id, key, severity, summary, details, self.now)

    def find(self) -> list[Anomaly]:
        s = self.settings
        start = datetime.combine(self.today - timedelta(days=s.window_days), time(), self.tz).astimezone(UTC)
        rows = _load(self.runtime, start, self.now + timedelta(microseconds=1), self.tz)
        today = [r for r in rows if r.day == self.today]
        found: list[Anomaly] = []
        if "spend_spike" not in s.disabled:
            found += self._spend_spikes(rows)
        if "token_ceiling" not in s.disabled:
            found += self._token_ceiling(today)
        if "retry_rate" not in s.disabled:
            found += self._retry_rate(today)
        if "output_ratio" not in s.disabled:
            found += self._output_ratio(today)
        if "unsettled_holds" not in s.disabled:
            found += self._unsettled_holds()
        return found

    def _scopes_of(self, row: _Row) -> list[tuple[str, str]]:
        out = []
        if row.team_id:
            out.append(("team", row.team_id))
        if row.key_id:
            out.append(("key", row.key_id))
        for label in self.settings.label_scopes:
            if row.labels.get(label):
                out.append(("label", f"{label}={row.labels[label]}"))
        return out

    def _spend_spikes(self, rows: list[_Row]) -> list[Anomaly]:
        s = self.settings
        scopes: dict[tuple[str, str], _Scope] = defaultdict(_Scope)
        for row in rows:
            for where in self._scopes_of(row):
                if row.day == self.today:
                    scopes[where].today.append(row)
                else:
                    scopes[where].history[row.day] += row.cost
        found = []
        for (scope, scope_id), data in sorted(scopes.items()):
            if not data.today or not data.history:
                continue
            # a young scope is averaged over the days it has existed, not over 30 empty days
            days = min(s.window_days, (self.today - min(data.history)).days)
            if days < s.min_history_days:
                continue
            baseline = sum(data.history.values()) // days
            spent = sum(r.cost for r in data.today)
            delta = spent - baseline
            if baseline <= 0 or spent <= baseline * s.spike_ratio:
                continue
            if nanos_to_dollars(delta) < s.min_spend_usd:
                continue
            ratio = spent / baseline
            found.append(
                self.anomaly(
                    "spend_spike",
                    scope,
                    scope_id,
                    "critical" if ratio >= 3 else "warning",
                    f"{scope} {scope_id} spent {_usd(spent)} today, {ratio:.0%} of its "
                    f"{days}-day daily average {_usd(baseline)}",
                    {
                        "cost_today_nanos": spent,
                        "baseline_nanos": baseline,
                        "cost_delta_nanos": delta,
                        "cost_delta_usd": str(nanos_to_dollars(delta)),
                        "ratio": round(ratio, 3),
                        "history_days": days,
                        **_evidence(data.today),
                    },
                )
            )
        return found

    def _token_ceiling(self, today: list[_Row]) -> list[Anomaly]:
        ceiling = self.settings.token_ceiling
        offenders: dict[tuple[str, str], list[_Row]] = defaultdict(list)
        for r in today:
            if r.kind == "usage" and r.total_input + r.output > ceiling:
                where = ("key", r.key_id) if r.key_id else ("person", r.person_id or "unattributed")
                offenders[where].append(r)
        found = []
        for (scope, scope_id), hits in sorted(offenders.items()):
            biggest = max(hits, key=lambda r: (r.total_input + r.output, r.request_id))
            cost = sum(r.cost for r in hits)
            found.append(
                self.anomaly(
                    "token_ceiling",
                    scope,
                    scope_id,
                    "warning",
                    f"{len(hits)} request(s) from {scope} {scope_id} over the {ceiling:,}-token ceiling "
                    f"(largest {biggest.total_input + biggest.output:,} tokens)",
                    {
                        "ceiling_tokens": ceiling,
                        "max_tokens": biggest.total_input + biggest.output,
                        "offending_requests": len(hits),
                        "cost_delta_nanos": cost,
                        "cost_delta_usd": str(nanos_to_dollars(cost)),
                        **_evidence(hits),
                    },
                )
            )
        return found

    def _retry_rate(self, today: list[_Row]) -> list[Anomaly]:
        s = self.settings
        groups: dict[str, list[_Row]] = defaultdict(list)
        for r in today:
            version = r.labels.get(s.prompt_label)
            if r.kind == "usage" and version:
                groups[version].append(r)
        found = []
        for version, rows in sorted(groups.items()):
            retries = [r for r in rows if r.retry_of]
            rate = len(retries) / len(rows)
            if len(rows) < s.min_requests or rate <= s.retry_rate:
                continue
            cost = sum(r.cost for r in retries)
            found.append(
                self.anomaly(
                    "retry_rate",
                    "label",
                    f"{s.prompt_label}={version}",
                    "warning",
                    f"{rate:.0%} of {len(rows)} requests for {s.prompt_label} {version} were retries "
                    f"(over {s.retry_rate:.0%}); fix retries before changing models",
                    {
                        "retry_rate": round(rate, 4),
                        "requests_total": len(rows),
                        "retries": len(retries),
                        "cost_delta_nanos": cost,
                        "cost_delta_usd": str(nanos_to_dollars(cost)),
                        **_evidence(retries),
                    },
                )
            )
        return found

    def _output_ratio(self, today: list[_Row]) -> list[Anomaly]:
        s = self.settings
        groups: dict[str, list[_Row]] = defaultdict(list)
        for r in today:
            task = r.labels.get(s.task_label)
            if r.kind == "usage" and task in s.compact_tasks:
                workflow = next((r.labels[k] for k in s.label_scopes if r.labels.get(k)), None)
                groups[f"{s.task_label}={task}" + (f",workflow={workflow}" if workflow else "")].append(r)
        found = []
        for scope_id, rows in sorted(groups.items()):
            inp = sum(r.total_input for r in rows)
            out = sum(r.output for r in rows)
            if len(rows) < s.min_ratio_requests or out <= inp * s.output_ratio:
                continue
            # the output beyond the expected ratio is what a compact schema would have saved
            excess = [r for r in rows if r.output > r.total_input * s.output_ratio]
            cost = sum(r.cost for r in excess)
            found.append(
                self.anomaly(
                    "output_ratio",
                    "label",
                    scope_id,
                    "warning",
                    f"{scope_id}: output tokens are {out / max(inp, 1):.1f}x input over {len(rows)} "
                    f"requests (limit {s.output_ratio:g}x); cap output or require a compact schema",
                    {
                        "input_tokens": inp,
                        "output_tokens": out,
                        "ratio": round(out / max(inp, 1), 3),
                        "cost_delta_nanos": cost,
                        "cost_delta_usd": str(nanos_to_dollars(cost)),
                        **_evidence(rows),
                    },
                )
            )
        return found

    def _unsettled_holds(self) -> list[Anomaly]:
        """Calls admitted today whose hold expired without a settle: the provider may have
        served them, and nothing was charged (a lost log event, a crashed adapter)."""
        by_scope: dict[tuple[str, str], list[_ExpiredHold]] = defaultdict(list)
        for hold in _expired_unsettled(self.runtime, self.day_start, self.now + timedelta(microseconds=1)):
            where = ("key", hold.key_id) if hold.key_id else ("person", hold.person_id or "unattributed")
            by_scope[where].append(hold)
        found = []
        for (scope, scope_id), holds in sorted(by_scope.items()):
            held = sum(h.amount_nanos for h in holds)
            latest = sorted(holds, key=lambda h: (h.expired_at, h.request_id), reverse=True)
            found.append(
                self.anomaly(
                    "unsettled_holds",
                    scope,
                    scope_id,
                    "warning",
                    f"{len(holds)} call(s) admitted for {scope} {scope_id} expired today without a "
                    f"settle; their holds ({_usd(held)}) went back to the budgets and whatever the "
                    "provider served is not charged",
                    {
                        "holds": len(holds),
                        "held_nanos": held,
                        "cost_delta_nanos": held,  # the worst case that went uncharged
                        "cost_delta_usd": str(nanos_to_dollars(held)),
                        "models": sorted({h.model for h in holds}),
                        "request_ids": [h.request_id for h in latest[:10]],
                    },
                )
            )
        return found


def settings_for(runtime: Runtime) -> DetectorSettings:
    config = runtime.config
    return DetectorSettings.from_config(config.plugins.get("anomaly") if config is not None else None)


def detect(runtime: Runtime, now: datetime | None = None) -> list[Anomaly]:
    """Evaluate every rule at ``now`` and queue each anomaly; returns the ones newly queued.

    A persisting anomaly keeps its ``dedup_key`` for the day and is queued again at most
    once per ``repeat_hours``, so observers see a first alert and then repeats (updates).
    """
    now = now or datetime.now(UTC)
    from allotment.outbox import enqueue

    settings = settings_for(runtime)
    detector = Detector(runtime, settings, now)
    queued = []
    bucket = now.astimezone(detector.tz).hour // max(1, settings.repeat_hours)
    for anomaly in detector.find():
        payload = asdict(anomaly)
        payload["at"] = anomaly.at.isoformat() if anomaly.at else None
        if enqueue(runtime, "anomaly_detected", payload, f"anomaly:{anomaly.dedup_key}:{bucket}"):
            queued.append(anomaly)
    return queued
