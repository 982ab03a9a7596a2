"""Session fixtures: one fake provider and one real LiteLLM proxy with allotment's callback,
started once per ledger backend (SQLite and PostgreSQL, or ``ALLOTMENT_TEST_BACKENDS``).

The proxy and the tests share one ledger; tests isolate themselves with fresh keys. Tests
marked ``sqlite_stack`` (they lock the SQLite file) run on the SQLite stack only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("litellm") is None:
    pytest.skip("litellm is not installed (pip install -e '.[litellm]')", allow_module_level=True)
# the test process imports litellm too (contract tests): never let it fetch the price map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from allotment.config import SAMPLE_CONFIG  # noqa: E402
from allotment.runtime import Runtime  # noqa: E402
from allotment.settings import Settings  # noqa: E402
from allotment.testing.fake_upstream import FakeUpstream  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from litellm_harness import proxy_config, start_proxy, stop_proxy  # noqa: E402
from litellm_stack import LEDGER_WAIT_SECONDS, SETTLE_GRACE_SECONDS, Stack  # noqa: E402

from helpers import session_backends, stack_database_url  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack" in metafunc.fixturenames:
        backends = session_backends(metafunc.config)
        if metafunc.definition.get_closest_marker("sqlite_stack") is not None:
            backends = [b for b in backends if b == "sqlite"]
        metafunc.parametrize("stack", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The proxy on one backend; pytest finishes one backend's tests before starting the next."""
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"litellm-stack-{backend}")
    database_url = stack_database_url(request, workdir)
    (workdir / "allotment.yaml").write_text(SAMPLE_CONFIG)
    runtime = Runtime.open(Settings(database_url=database_url), load_entrypoints=False)
    runtime.apply_config_text(SAMPLE_CONFIG, "allotment.yaml")
    assert runtime.engine.dialect.name.startswith(backend)  # sqlite, or postgresql
    fake = FakeUpstream().start()
    proxy = None
    (workdir / "proxy").mkdir()
    shutil.copy(Path(__file__).parent / "contract_probe.py", workdir / "proxy" / "contract_probe.py")
    try:
        proxy = start_proxy(
            workdir / "proxy",
            proxy_config(fake.openai_base_url, probe=True),
            env={
                "ALLOTMENT_DATABASE_URL": database_url,
                "ALLOTMENT_CONFIG": str(workdir / "allotment.yaml"),
                "ALLOTMENT_LITELLM_SETTLE_GRACE_SECONDS": str(SETTLE_GRACE_SECONDS),
                "ALLOTMENT_LITELLM_SWEEP_SECONDS": "1",
                # a locked ledger fails in a second, not the default 30 s (ledger-unavailable tests)
                "ALLOTMENT_LEDGER_WAIT_SECONDS": str(LEDGER_WAIT_SECONDS),
                "ALLOTMENT_CONTRACT_PROBE_FILE": str(workdir / "probe.jsonl"),
            },
        )
        yield Stack(fake, proxy, runtime, workdir, [])
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        fake.stop()
        runtime.close()


@pytest.fixture(autouse=True)
def _close_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        while stack.clients:
            stack.clients.pop().close()


@pytest.fixture
def fake(stack: Stack) -> Iterator[FakeUpstream]:
    stack.fake.reset()
    yield stack.fake
    stack.fake.reset()
