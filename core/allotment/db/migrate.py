"""Schema migrations with Alembic, run programmatically (``allotment db upgrade``).

The scripts ship inside the package, so an installed wheel can migrate its own database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

from allotment.db.executor import connect_sqlite, sqlite_path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a settings URL (psycopg 3 driver for PostgreSQL)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def create_sa_engine(url: str, *, write: bool = False) -> Engine:
    """An engine for admin, config and reports (not the hot path).

    On SQLite a ``write`` engine takes the write lock when a transaction begins
    (``BEGIN IMMEDIATE``); a read engine's transactions are deferred and never block writers.
    """
    sa_url = sqlalchemy_url(url)
    if sa_url.startswith("sqlite"):
        path = sqlite_path(sa_url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sa_url, creator=lambda: connect_sqlite(path))

        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # the connection is in autocommit mode; transactions are explicit
            conn.exec_driver_sql(begin)

        return engine
    return create_engine(sa_url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_sa_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
