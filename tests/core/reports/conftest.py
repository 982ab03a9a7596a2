"""A seeded runtime shared by the report tests of one module (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment.testing import temporary_runtime

from .seed import Ev, seed, traffic


@pytest.fixture(scope="module")
def events() -> list[Ev]:
    return traffic()


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, events: list[Ev]
) -> Iterator[object]:
    """A runtime holding the seed traffic; module-scoped because seeding costs a few seconds."""
    tmp: Path = tmp_path_factory.mktemp("reports")
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        template = request.getfixturevalue("pg_template")
        url = server.create_database(template)
    else:
        url = f"sqlite:///{tmp / 'allotment.db'}"
    with temporary_runtime(tmp, database_url=url) as rt:
        seed(rt, events)
        yield rt
