"""Schema migrations with Alembic, run programmatically (``allotment db upgrade``).

The scripts ship inside the package, so an installed wheel can migrate its own database.
"""

from __future__ import annotations

import math
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from allotment.db.executor import DEFAULT_WAIT_SECONDS, connect_sqlite, sqlite_path
from allotment.errors import LedgerUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a settings URL (psycopg 3 driver for PostgreSQL)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def create_sa_engine(url: str, *, write: bool = False, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Engine:
    """An engine for admin, config, migrations and reports (not the hot path).

    On SQLite a ``write`` engine takes the write lock when a transaction begins
    (``BEGIN IMMEDIATE``); a read engine's transactions are deferred and never block writers.
    ``wait_seconds``: how long a locked SQLite file or a PostgreSQL connection is waited for.
    """
    sa_url = sqlalchemy_url(url)
    if sa_url.startswith("sqlite"):
        path = sqlite_path(sa_url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sa_url, creator=lambda: connect_sqlite(path, wait_seconds=wait_seconds))

        _report_unavailable(engine)
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # the connection is in autocommit mode; transactions are explicit
            conn.exec_driver_sql(begin)

        return engine
    engine = create_engine(
        sa_url,
        pool_pre_ping=True,
        pool_timeout=wait_seconds,
        connect_args={"connect_timeout": max(1, math.ceil(wait_seconds))},
    )
    _report_unavailable(engine)
    return engine


def _report_unavailable(engine: Engine) -> None:
    """A database that cannot do the work (locked past the wait, unreachable, disk full) raises
    ``LedgerUnavailable``, as on the ledger's own connections: the CLI says ``error: ...`` and
    the API answers 503, not a traceback or a 500."""

    @event.listens_for(engine, "handle_error")
    def _unavailable(context):  # type: ignore[no-untyped-def]
        # a pre-ping's failure is how the pool notices a dropped connection and reconnects
        if context.is_pre_ping:
            return
        if isinstance(context.sqlalchemy_exception, sa_exc.OperationalError):
            raise LedgerUnavailable(
                f"ledger database unavailable: {context.original_exception}"
            ) from context.original_exception


def alembic_config(url: str, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    cfg.attributes["wait_seconds"] = wait_seconds
    return cfg


def upgrade(url: str, revision: str = "head", wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent), waiting at most
    ``wait_seconds`` for a locked or unreachable database."""
    command.upgrade(alembic_config(url, wait_seconds), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_sa_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
