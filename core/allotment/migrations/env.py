"""Alembic environment: migrates the database named by the config's sqlalchemy.url."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from allotment.db import (
    report_schema,  # noqa: F401  (report rollups)
    schema,  # noqa: F401  (registers the tables)
)
from allotment.db.migrate import create_sa_engine

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    wait = context.config.attributes.get("wait_seconds")
    engine = create_sa_engine(url, write=True, **({} if wait is None else {"wait_seconds": wait}))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
