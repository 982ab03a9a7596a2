"""Small helpers shared by test modules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allotment.db.executor import sqlite_path


@contextmanager
def write_locked(rt: Any) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock (as another process would);
    allotment's writer waits ``ledger_wait_seconds`` for it, then fails."""
    other = sqlite3.connect(sqlite_path(rt.settings.database_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def metric(client: Any, name: str) -> float:
    """The value of an unlabelled Prometheus metric on a gateway test client's ``/metrics``."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def session_backends(config: Any) -> list[str]:
    """``BACKENDS`` of tests/conftest.py (``ALLOTMENT_TEST_BACKENDS`` narrows it), for fixtures
    that start servers once per ledger backend.

    A folder's conftest cannot import the root one (both are modules named ``conftest``), so
    it is found among pytest's plugins.
    """
    root = Path(__file__).parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "") == root:
            return list(plugin.BACKENDS)
    raise RuntimeError(f"{root} is not loaded")


def stack_database_url(request: Any, workdir: Path) -> str:
    """The ledger for a server stack on ``request.param``: a fresh migrated PostgreSQL
    database from the session's server, or a SQLite file in ``workdir``."""
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_server")
        return str(pg.create_database(request.getfixturevalue("pg_template")))
    return f"sqlite:///{workdir / 'allotment.db'}"
