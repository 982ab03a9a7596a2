"""The ingest loop: tail the access log, parse complete lines, settle or record them in bulk, checkpoint.

One-shot (cron) reads what is there and stops; follow mode polls until stopped.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from allotment_nginx.checkpoint import CheckpointStore, DbCheckpointStore
from allotment_nginx.logline import LogRecord, MalformedLine, parse_line
from allotment_nginx.sink import LedgerSink
from allotment_nginx.tailer import Tailer

if TYPE_CHECKING:
    from allotment.runtime import Runtime

log = logging.getLogger("allotment.nginx")
_MALFORMED_LOG_EVERY = 1000  # log the first malformed line, then one in this many


@dataclass
class IngestStats:
    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    failed: int = 0  # lines the ledger refused (e.g. invalid usage): logged and skipped
    rotations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            **{
                name: self.outcomes.get(name, 0)
                for name in ("settled", "recorded", "denied", "skipped", "unknown")
            },
            "malformed": self.malformed,
            "failed": self.failed,
            "rotations": self.rotations,
        }


def checkpoint_name(path: str) -> str:
    return f"nginx:{path}"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied.

    A batch allocates tens of thousands of short-lived containers (records, usages, intents,
    event rows), freed by reference counting; none form cycles. Each few hundred of them would
    trigger the cyclic collector, which also walks every older object of the process (the
    runtime, its plugins, SQLAlchemy) now and then: about a tenth of the CPU time of an ingest.
    The collector is back on after the batch, and collects whatever is due then.
    """
    if not gc.isenabled():  # someone else's choice: leave it alone
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class LogIngester:
    """Owns a ``Tailer`` and commits each batch to the ledger before saving its checkpoint."""

    def __init__(
        self,
        runtime: Runtime,
        path: str,
        *,
        store: CheckpointStore | None = None,
        aborted: str = "reserve",
        rotate_wait: float = 5.0,
    ) -> None:
        self.runtime = runtime
        self.sink = LedgerSink(runtime, aborted=aborted)
        self.path = os.path.abspath(path)
        self.store = store or DbCheckpointStore(runtime.write_engine, checkpoint_name(self.path))
        self.tailer = Tailer(self.path, self.store.load(), rotate_wait=rotate_wait)
        self.stats = IngestStats()

    def poll(self) -> int:
        """Ingest every complete line available now; returns how many lines were read."""
        read = 0
        for batch in self.tailer.batches():
            # one ledger transaction per batch of lines
            with _collector_paused(), self.runtime.batch():
                self._lines(batch.lines)
            read += len(batch.lines)
            self.stats.lines += len(batch.lines)
            self.stats.malformed += batch.oversized
            if batch.checkpoint is not None:
                # after the ledger commits: a crash in between re-reads, and re-reads are no-ops
                self.store.save(batch.checkpoint)
        self.stats.rotations = self.tailer.rotations
        return read

    def _lines(self, lines: list[bytes]) -> None:
        records: list[LogRecord] = []
        for line in lines:
            try:
                records.append(parse_line(line))
            except MalformedLine as exc:
                if not line.strip():
                    continue
                self.stats.malformed += 1
                if self.stats.malformed % _MALFORMED_LOG_EVERY == 1:
                    log.warning("nginx tail: malformed line skipped (%s): %.200r", exc, line)
        # a ledger that is down raises here: the batch rolls back and its checkpoint stays put
        for outcome in self.sink.apply(records):
            if outcome == "failed":
                self.stats.failed += 1
            else:
                self.stats.outcomes[outcome] += 1

    def run(
        self, *, follow: bool = False, interval: float = 0.25, stop: threading.Event | None = None
    ) -> IngestStats:
        """One pass (cron), or poll every ``interval`` seconds until ``stop`` is set."""
        stop = stop or threading.Event()
        self.poll()
        while follow and not stop.is_set():
            if self.poll() == 0:
                stop.wait(interval)
        return self.stats

    def close(self) -> None:
        self.tailer.close()


def ingest_once(runtime: Runtime, path: str, **options: Any) -> IngestStats:
    ingester = LogIngester(runtime, path, **options)
    try:
        started = time.monotonic()
        stats = ingester.run()
        log.info("nginx tail: %s in %.2fs", stats.to_dict(), time.monotonic() - started)
        return stats
    finally:
        ingester.close()
