"""Where ledger transactions run: a group-committing writer thread for SQLite, a pool for PostgreSQL.

Callers hand over a function of a DBAPI connection; it runs inside one transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from allotment.errors import LedgerUnavailable

T = TypeVar("T")
Op = Callable[[Any], T]

MAX_BATCH = 256
CHECKPOINT_SECONDS = 0.5
# Past this many WAL frames (4 KiB pages) the checkpointer restarts the WAL from its start:
# a bound on its size under sustained load, at the price of a short pause of the writers.
RESTART_FRAMES = 16384  # 64 MiB
# How long that restart may wait for a reader or another process's writer before giving up
# until the next tick (it holds this process's writers back meanwhile).
RESTART_WAIT_MS = 20
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# how long a ledger operation waits for a locked or unreachable database, by default
DEFAULT_WAIT_SECONDS = 30.0


class Executor:
    """Runs ledger operations transactionally; ``dialect`` is ``sqlite`` or ``postgresql``."""

    dialect: str
    placeholder: str

    def run(self, op: Op[T]) -> T:
        raise NotImplementedError

    def submit(self, op: Op[T]) -> Future[T]:
        raise NotImplementedError

    def run_one(self, op: Op[T]) -> T:
        """Like ``run`` for an operation that issues exactly one statement, atomic by itself.

        PostgreSQL runs it in autocommit: one round trip instead of BEGIN, statement, COMMIT.
        """
        return self.run(op)

    async def run_async(self, op: Op[T]) -> T:
        return await asyncio.wrap_future(self.submit(op))

    def read(self, op: Op[T]) -> T:
        """Run a read-only function on a connection outside the writer."""
        raise NotImplementedError

    def batch(self) -> AbstractContextManager[None]:
        """Run every operation this thread submits inside one transaction until the block ends.

        Each operation still gets its own savepoint: one that raises is rolled back alone and
        its error reaches the caller. Leaving the block by an exception rolls back everything.
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise LedgerUnavailable(f"not a SQLite URL: {url!r}")
    path = url[len(prefix) :]
    return path or ":memory:"


def connect_sqlite(
    path: str, synchronous: str = "NORMAL", wait_seconds: float = DEFAULT_WAIT_SECONDS
) -> sqlite3.Connection:
    """A connection as the ledger uses them; ``wait_seconds``: how long a locked database is
    waited for before the operation fails (``LedgerUnavailable``)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=wait_seconds)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
    conn.execute("PRAGMA foreign_keys=OFF")
    # when the WAL starts over, a file that grew past this is cut back to it
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    return conn


class SqliteExecutor(Executor):
    """Group commit by flat combining: whoever holds the writer lock commits everyone's work.

    A caller queues its operation, then takes the writer lock; if another caller already ran
    it meanwhile, it returns at once, otherwise it runs every queued operation (up to 256) in
    one ``BEGIN IMMEDIATE … COMMIT``, each in its own SAVEPOINT. A lone caller pays no thread
    hop; many callers on one hot wallet share one commit, which keeps p99 low.
    """

    dialect = "sqlite"
    placeholder = "?"

    def __init__(
        self, path: str, synchronous: str = "NORMAL", wait_seconds: float = DEFAULT_WAIT_SECONDS
    ) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self.wait_seconds = wait_seconds
        self._queue: deque[tuple[Op[Any], Future[Any]]] = deque()
        self._writer = threading.Lock()
        self._conn = connect_sqlite(path, synchronous, wait_seconds)
        # Checkpoints copy the WAL into the database file; doing them inside a commit puts
        # milliseconds on a random request, so a background thread does them instead.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._local = threading.local()
        self._closed = False
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="allotment-ledger")
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="allotment-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        if self.path == ":memory:":
            return
        conn = connect_sqlite(self.path, self.synchronous, self.wait_seconds)
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_SECONDS):
                with suppress(sqlite3.Error):  # busy or locked: the next tick tries again
                    self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> int:
        """Copy the WAL into the database file, and start the WAL over once it has grown.

        A PASSIVE checkpoint never blocks a writer, but under steady traffic it never
        catches up with the newest frames, and SQLite only starts the WAL over from its
        beginning after a checkpoint that caught up. Left alone, the WAL then grows without
        end (about 60 KB per admit+settle) and every page lookup searches more of it.

        So past ``RESTART_FRAMES`` a RESTART checkpoint runs while this process's writers
        wait on the writer lock. What makes a checkpoint slow is flushing the WAL's dirty
        pages to disk, so the WAL is flushed twice beforehand, outside the lock: the
        RESTART then only flushes and copies what was written in the last few milliseconds.
        Returns the frames left in the WAL after the tick.
        """
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or frames < RESTART_FRAMES:
            return int(frames)
        with suppress(OSError):
            fd = os.open(self.path + "-wal", os.O_RDONLY)
            try:
                for _ in range(2):
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        try:
            with self._writer:
                busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.wait_seconds * 1000)}")
        return int(frames) if busy else 0

    def run(self, op: Op[T]) -> T:
        if self._closed:
            raise LedgerUnavailable("the ledger is closed")
        if getattr(self._local, "in_batch", False):
            return _in_savepoint(self._conn, op)
        if not self._queue and self._writer.acquire(blocking=False):
            # uncontended: run it alone, without queueing a future
            try:
                if not self._queue:
                    return self._run_alone(op)
            finally:
                self._writer.release()
        future: Future[T] = Future()
        self._queue.append((op, future))
        with self._writer:
            if not future.done():
                self._drain()
        return future.result()

    def submit(self, op: Op[T]) -> Future[T]:
        return self._threads.submit(self.run, op)

    @contextmanager
    def batch(self) -> Iterator[None]:
        if getattr(self._local, "in_batch", False):
            yield  # nested: the outer batch commits
            return
        with self._writer:
            self._drain()  # others' queued work commits first, in its own transaction
            self._conn.execute("BEGIN IMMEDIATE")
            self._local.in_batch = True
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._local.in_batch = False

    def read(self, op: Op[T]) -> T:
        if self._closed:
            raise LedgerUnavailable("the ledger is closed")
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = connect_sqlite(self.path, self.synchronous, self.wait_seconds)
                self._local.conn = conn
            return op(conn)
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc

    def _run_alone(self, op: Op[T]) -> T:
        """One operation in its own transaction (the caller holds the writer lock)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger database unavailable: {exc}") from exc
        try:
            value = op(conn)
        except BaseException as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise _unavailable(exc) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise LedgerUnavailable(f"ledger commit failed: {exc}") from exc
        return value

    def _drain(self) -> None:
        batch: list[tuple[Op[Any], Future[Any]]] = []
        while self._queue and len(batch) < MAX_BATCH:
            batch.append(self._queue.popleft())
        if batch:
            self._run_batch(self._conn, batch)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op[Any], Future[Any]]]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = LedgerUnavailable(f"ledger database unavailable: {exc}")
            for _, future in batch:
                future.set_exception(error)
            return
        single = len(batch) == 1
        for op, _ in batch:
            if single:
                try:
                    results.append((True, op(conn)))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    results.append((False, _unavailable(exc)))
                continue
            conn.execute("SAVEPOINT op")
            try:
                value = op(conn)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((False, _unavailable(exc)))
            else:
                conn.execute("RELEASE op")
                results.append((True, value))
        try:
            if single and not results[0][0]:
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = LedgerUnavailable(f"ledger commit failed: {exc}")
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._threads.shutdown(wait=True)
        with self._writer:
            self._drain()
        self._stop_checkpoints.set()
        self._checkpointer.join(timeout=10)
        with suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()


class PostgresExecutor(Executor):
    """Each operation is one transaction on a pooled psycopg connection in the caller's thread.

    Wallet rows are always updated in ascending id order, so reservations cannot deadlock.
    """

    dialect = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str, pool_size: int = 8, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise LedgerUnavailable(
                "PostgreSQL needs the postgres extra: pip install 'allotment[postgres]'"
            ) from exc
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        # autocommit: ``run`` opens its transactions explicitly, ``run_one`` needs none
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=True,
            timeout=wait_seconds,  # waiting for a free (or re-made) connection
            kwargs={"autocommit": True, "connect_timeout": max(1, round(wait_seconds))},
        )
        self._threads = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="allotment-pg")
        self._local = threading.local()

    def run(self, op: Op[T]) -> T:
        import psycopg

        batch_conn = getattr(self._local, "conn", None)
        try:
            if batch_conn is not None:
                with batch_conn.transaction():  # a savepoint inside the batch's transaction
                    return op(batch_conn)
            with self._pool.connection() as conn, conn.transaction():
                return op(conn)
        except psycopg.OperationalError as exc:
            raise LedgerUnavailable(f"ledger database unavailable: {exc}") from exc

    def run_one(self, op: Op[T]) -> T:
        import psycopg

        if getattr(self._local, "conn", None) is not None:
            return self.run(op)  # inside a batch: a savepoint in the batch's transaction
        try:
            with self._pool.connection() as conn:
                return op(conn)
        except psycopg.OperationalError as exc:
            raise LedgerUnavailable(f"ledger database unavailable: {exc}") from exc

    @contextmanager
    def batch(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def submit(self, op: Op[T]) -> Future[T]:
        return self._threads.submit(self.run, op)

    def read(self, op: Op[T]) -> T:
        # the ledger's reads are single statements: autocommit, no BEGIN/COMMIT round trips
        return self.run_one(op)

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self._pool.close()


def create_executor(
    url: str,
    *,
    synchronous: str = "NORMAL",
    pool_size: int = 8,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> Executor:
    if url.startswith("sqlite"):
        return SqliteExecutor(sqlite_path(url), synchronous, wait_seconds)
    if url.startswith("postgresql"):
        return PostgresExecutor(url, pool_size, wait_seconds)
    raise LedgerUnavailable(f"unsupported database URL {url!r} (use sqlite:/// or postgresql://)")


def _unavailable(exc: BaseException) -> BaseException:
    """A database that cannot do its work (locked, I/O error, full disk) as ``LedgerUnavailable``:
    callers answer 503 ``ledger_unavailable`` (or fail open, if configured), never 500."""
    if isinstance(exc, sqlite3.OperationalError):
        unavailable = LedgerUnavailable(f"ledger database unavailable: {exc}")
        unavailable.__cause__ = exc
        return unavailable
    return exc


def _in_savepoint(conn: sqlite3.Connection, op: Op[T]) -> T:
    conn.execute("SAVEPOINT op")
    try:
        value = op(conn)
    except BaseException as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        if isinstance(exc, sqlite3.OperationalError):
            raise _unavailable(exc) from exc
        raise
    conn.execute("RELEASE op")
    return value
