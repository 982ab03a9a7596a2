"""Fixtures for the Bedrock adapter: a runtime with the Acme org, real boto3 clients, fake wire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bedrock_wire import FakeBedrock, bedrock_client

from allotment.runtime import Runtime
from allotment.testing import temporary_runtime


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # fake credentials only: nothing here may ever reach AWS
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path) as runtime:
        yield runtime


@pytest.fixture
def ada_key(rt: Runtime) -> str:
    return rt.admin.issue_key("ada@acme.example")[0]


@pytest.fixture
def client() -> Any:
    return bedrock_client()


@pytest.fixture
def wire(client: Any) -> FakeBedrock:
    return FakeBedrock(client)
