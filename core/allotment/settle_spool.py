"""Settles the ledger refused: retried on one schedule, then kept in a spool file, not dropped.

A process that stops (or runs out of retries) writes what it could not settle to the spool;
``replay`` settles it later, idempotently by request id, so nothing is charged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from allotment.codec import intent_from_dict, intent_to_dict, principal_from_dict, principal_to_dict
from allotment.errors import AllotmentError, LedgerUnavailable, NotFound
from allotment.types import Outcome, Usage

if TYPE_CHECKING:
    from allotment.runtime import Runtime
    from allotment.settings import Settings

log = logging.getLogger("allotment.spool")

SPOOL_VERSION = 1


@dataclass(frozen=True)
class PendingSettle:
    """One ``Runtime.settle`` call, with everything needed to make it again in another process."""

    request_id: str
    usage: Usage
    outcome: Outcome = Outcome.SUCCESS
    flags: tuple[str, ...] = ()
    external_cost_nanos: int | None = None
    served_by: tuple[str, str] | None = None

    def settle(self, runtime: Runtime) -> None:
        runtime.settle(
            self.request_id,
            self.usage,
            self.outcome,
            external_cost_nanos=self.external_cost_nanos,
            flags=self.flags,
            served_by=self.served_by,
        )


async def retry_settle(
    attempt: Callable[[], Awaitable[bool]],
    delays: Sequence[float],
    *,
    stopping: asyncio.Event | None = None,
) -> bool:
    """Call ``attempt`` after each delay until it returns True (done); whether it ever did.

    ``stopping`` set cuts the current wait short for one last attempt, and ends the retries.
    The caller spools what is still pending when this returns False (see ``spool``).
    """
    for delay in delays:
        if stopping is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
        if await attempt():
            return True
        if stopping is not None and stopping.is_set():
            return False
    return False


def spool_path(settings: Settings) -> Path:
    """``ALLOTMENT_SETTLE_SPOOL``, else beside a SQLite ledger, else the working directory."""
    if settings.settle_spool is not None:
        return settings.settle_spool
    if settings.is_sqlite:
        database = settings.database_url.split(":///", 1)[-1].split("?", 1)[0]
        if database and database != ":memory:":
            return Path(database + ".pending-settles.jsonl")
    return Path("allotment.pending-settles.jsonl")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time across processes (proxy workers, ``allotment settles replay``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _entry(runtime: Runtime, pending: PendingSettle, reason: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "v": SPOOL_VERSION,
        "request_id": pending.request_id,
        "usage": asdict(pending.usage),
        "outcome": pending.outcome.value,
        "flags": list(pending.flags),
        "external_cost_nanos": pending.external_cost_nanos,
        "served_by": list(pending.served_by) if pending.served_by else None,
        "reason": reason,
        "spooled_at": datetime.now(UTC).isoformat(),
    }
    let_through = runtime.let_through(pending.request_id)
    if let_through is not None:
        # admitted while the ledger was down: only this process knew the call; the replay records it
        intent, principal = let_through
        entry["let_through"] = {"intent": intent_to_dict(intent), "principal": principal_to_dict(principal)}
    return entry


def spool(runtime: Runtime, pending: Sequence[PendingSettle], reason: str) -> Path:
    """Append settles the ledger refused to the spool file, durably (fsync'd); its path."""
    path = spool_path(runtime.settings)
    if not pending:
        return path
    data = b"".join(orjson.dumps(_entry(runtime, p, reason)) + b"\n" for p in pending)
    with _locked(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path)
    for p in pending:
        log.error(
            "%s: could not settle %s; spooled to %s for `allotment settles replay`",
            reason,
            p.request_id,
            path,
        )
    return path


def attempt_settle(runtime: Runtime, pending: PendingSettle, reason: str = "allotment") -> bool:
    """One synchronous attempt: True once nothing is left to do (settled, not admitted in this
    ledger, or refused for good, which is logged), False when a retry may succeed."""
    try:
        pending.settle(runtime)
    except NotFound:
        log.debug("settle %s: not admitted in this ledger", pending.request_id)
    except LedgerUnavailable as exc:
        log.warning("%s: settling %s: %s", reason, pending.request_id, exc.message)
        return False
    except AllotmentError:
        log.exception("settling %s refused", pending.request_id)
    except Exception:
        log.exception("settling %s failed", pending.request_id)
        return False
    return True


def settle_or_spool(runtime: Runtime, pending: Sequence[PendingSettle], reason: str) -> list[str]:
    """One last synchronous attempt each, then the spool for those the ledger refused; the
    request ids spooled. Once the ledger has been unavailable for one, the rest go straight
    to the spool: each attempt would wait ``ledger_wait_seconds`` for the same lock."""
    failed: list[PendingSettle] = []
    for item in pending:
        if failed or not attempt_settle(runtime, item, reason):
            failed.append(item)
        else:
            log.warning("%s: last attempt for %s done", reason, item.request_id)
    spool(runtime, failed, reason)
    return [item.request_id for item in failed]


@dataclass
class ReplayReport:
    settled: int = 0  # settled now, or found settled already (idempotent)
    kept: int = 0  # still in the spool: the ledger is unavailable, or has no such reservation
    refused: int = 0  # refused for good by the ledger (logged) and taken out of the spool
    request_ids: list[str] = field(default_factory=list)  # those settled

    def to_dict(self) -> dict[str, Any]:
        return {"settled": self.settled, "kept": self.kept, "refused": self.refused}


def _pending_of(entry: dict[str, Any]) -> PendingSettle:
    served = entry.get("served_by")
    return PendingSettle(
        request_id=str(entry["request_id"]),
        usage=Usage(**entry["usage"]),
        outcome=Outcome(entry["outcome"]),
        flags=tuple(entry.get("flags") or ()),
        external_cost_nanos=entry.get("external_cost_nanos"),
        served_by=(str(served[0]), str(served[1])) if served else None,
    )


def _replay_one(runtime: Runtime, entry: dict[str, Any]) -> None:
    pending = _pending_of(entry)
    try:
        pending.settle(runtime)
    except NotFound:
        let_through = entry.get("let_through")
        if not let_through:
            raise
        principal = principal_from_dict(let_through["principal"])
        runtime.record(
            intent_from_dict(let_through["intent"]),
            pending.usage,
            pending.outcome,
            principal=principal,
            external_cost_nanos=pending.external_cost_nanos,
            flags=[*pending.flags, "fail_open"],
        )


def replay(runtime: Runtime, path: Path | None = None) -> ReplayReport:
    """Settle every spooled call; keep those the ledger cannot take yet. Idempotent."""
    path = path or spool_path(runtime.settings)
    report = ReplayReport()
    if not path.exists():
        return report
    with _locked(path):
        lines = path.read_bytes().splitlines()
        keep: list[bytes] = []
        unavailable = False
        for line in lines:
            if not line.strip():
                continue
            if unavailable:
                keep.append(line)
                report.kept += 1
                continue
            try:
                entry = orjson.loads(line)
                if not isinstance(entry, dict) or entry.get("v") != SPOOL_VERSION:
                    raise ValueError("not a spooled settle")
                _replay_one(runtime, entry)
            except LedgerUnavailable as exc:
                log.warning("replaying the settle spool: %s; kept for the next replay", exc.message)
                unavailable = True  # the rest would wait for the same lock: keep them all
                keep.append(line)
                report.kept += 1
            except NotFound:
                log.error(
                    "spooled settle %s: this ledger has no such reservation; kept in %s",
                    entry["request_id"],
                    path,
                )
                keep.append(line)
                report.kept += 1
            except AllotmentError as exc:
                log.error("spooled settle %s refused by the ledger: %s", entry["request_id"], exc.message)
                report.refused += 1
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable line in the settle spool %s kept aside: %s", path, exc)
                keep.append(line)
                report.kept += 1
            else:
                report.settled += 1
                report.request_ids.append(str(entry["request_id"]))
        if report.settled or report.refused:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in keep))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path)
    if report.settled:
        log.warning("replayed %d spooled settle(s) from %s", report.settled, path)
    return report


def has_pending(settings: Settings) -> bool:
    """Whether the spool holds anything (one stat: cheap enough for a periodic check)."""
    try:
        return spool_path(settings).stat().st_size > 0
    except OSError:
        return False
