"""Session-wide fixtures: a real PostgreSQL started once, and a runtime on SQLite or PostgreSQL.

Tests that take ``runtime`` run twice: on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment.testing import temporary_runtime

BACKENDS = ["sqlite", "postgres"]
if os.environ.get("ALLOTMENT_TEST_BACKENDS"):
    BACKENDS = os.environ["ALLOTMENT_TEST_BACKENDS"].split(",")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    from pgserver import PgServer

    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: object) -> str:
    """A migrated database that per-test databases are cloned from."""
    from allotment.db.migrate import upgrade

    url = pg_server.create_database()  # type: ignore[attr-defined]
    upgrade(url)
    return url.rsplit("/", 1)[1]


@pytest.fixture
def postgres_url(pg_server: object, pg_template: str) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    return pg_server.create_database(pg_template)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'allotment.db'}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'allotment.db'}"


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[object]:
    with temporary_runtime(tmp_path, database_url=database_url) as rt:
        yield rt
