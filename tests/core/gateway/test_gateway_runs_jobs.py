"""``allotment serve`` runs the scheduled jobs (expiry, outbox, reports, plugins') while it serves."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allotment import hookimpl
from allotment.gateway import create_app
from allotment.testing import temporary_runtime


class Heartbeat:
    def __init__(self) -> None:
        self.ran = threading.Event()

    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        scheduler.add("heartbeat", lambda runtime: self.ran.set(), every=0.2)


def test_jobs_run_while_the_gateway_serves_and_stop_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the built-in report jobs catch up and write ./reports
    beat = Heartbeat()
    with temporary_runtime(tmp_path, plugins=[("heartbeat", beat)]) as rt:
        with TestClient(create_app(rt, run_jobs=True)) as client:
            assert client.get("/healthz").status_code == 200
            assert beat.ran.wait(10), "the plugin's job never ran inside the gateway"
        beat.ran.clear()
        assert not beat.ran.wait(0.6)  # shut down with the app


def test_jobs_are_off_unless_asked(tmp_path: Path) -> None:
    beat = Heartbeat()
    with (
        temporary_runtime(tmp_path, plugins=[("heartbeat", beat)]) as rt,
        TestClient(create_app(rt)) as client,
    ):
        assert client.get("/healthz").status_code == 200
        assert not beat.ran.wait(0.6)
