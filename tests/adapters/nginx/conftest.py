"""Session fixtures: one fake provider, one ``allotment serve``, an enforcing and a passive nginx,
started once per ledger backend (SQLite and PostgreSQL, or ``ALLOTMENT_TEST_BACKENDS``).

Tests issue their own keys (with their own budgets) and read the shared access logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from nginx_harness import Nginx, nginx_available, start_nginx, stop

from allotment.runtime import Runtime
from allotment.settings import Settings
from allotment.testing import SAMPLE_CONFIG
from allotment.testing.fake_upstream import FakeUpstream
from allotment.testing.serve import start_serve
from helpers import session_backends, stack_database_url


@dataclass
class Stack:
    fake: FakeUpstream
    decision_url: str
    enforced: Nginx
    passive: Nginx
    runtime: Runtime  # on the same database as allotment serve: issues keys, reads the ledger
    workdir: Path

    def key(self, email: str = "ada@acme.example", budget: str | None = None) -> tuple[str, str]:
        key, key_id = self.runtime.admin.issue_key(
            email, name="nginx-test", monthly_budget=Decimal(budget) if budget else None
        )
        self.runtime.refresh_directory()
        return key, key_id


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack" in metafunc.fixturenames:
        backends = session_backends(metafunc.config)
        metafunc.parametrize("stack", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack on one backend; pytest finishes one backend's tests before starting the next."""
    if not nginx_available():
        pytest.skip("nginx with the njs module is not installed (make system-deps)")
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"nginx-stack-{backend}")
    database_url = stack_database_url(request, workdir)
    fake = FakeUpstream().start()
    serve = start_serve(workdir, SAMPLE_CONFIG, database_url=database_url, admin_token="nginx-test-token")
    decision_url = serve.url
    runtime = Runtime.open(Settings(database_url=database_url), migrate=False, load_entrypoints=False)
    enforced = passive = None
    try:
        assert runtime.engine.dialect.name.startswith(backend)  # sqlite, or postgresql
        enforced = start_nginx(workdir / "enforced", fake.url, decision_url)
        passive = start_nginx(workdir / "passive", fake.url, decision_url, passive=True)
        yield Stack(fake, decision_url, enforced, passive, runtime, workdir)
    finally:
        for server in (enforced, passive):
            if server is not None:
                stop(server.process)
        runtime.close()
        serve.stop(timeout=15)
        fake.stop()
