"""``allotment sync`` as a real process with the installed BambooHR plugin: dry run, apply, disable.

The plugin comes in through its entry point, as a third-party package would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_bamboohr import FakeBambooHR, serve

from allotment.testing import SAMPLE_CONFIG

ALLOTMENT = str(Path(sys.executable).with_name("allotment"))


@pytest.fixture
def bhr() -> Iterator[FakeBambooHR]:
    fake = FakeBambooHR()
    fake.upsert(7, firstName="Zoe", workEmail="zoe@acme.example", department="Engineering", status="Active")
    with serve(fake):
        yield fake


def run(tmp_path: Path, bhr: FakeBambooHR, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "allotment.yaml"
    config.write_text(
        SAMPLE_CONFIG
        + f"""
plugins:
  bamboohr: {{base_url: "{bhr.url}/api/v1", api_key: env:TEST_BAMBOOHR_KEY}}
  sync:
    rules:
      - {{department: Engineering, tier: eng-mid, team: engineering}}
"""
    )
    environ = {
        **os.environ,
        "TEST_BAMBOOHR_KEY": "bhr-secret",
        "ALLOTMENT_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        **env,
    }
    return subprocess.run(
        [ALLOTMENT, "sync", "--config", str(config), *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dry_run_then_apply_from_the_command_line(tmp_path: Path, bhr: FakeBambooHR) -> None:
    dry = run(tmp_path, bhr, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert data["dry_run"] is True and data["counts"]["join"] == 1
    applied = run(tmp_path, bhr)
    assert applied.returncode == 0, applied.stderr
    assert "join 1" in applied.stdout and "zoe@acme.example" in applied.stdout
    again = run(tmp_path, bhr, "--json")
    assert json.loads(again.stdout)["counts"]["join"] == 0


def test_a_vendor_error_exits_non_zero(tmp_path: Path, bhr: FakeBambooHR) -> None:
    bhr.api_key = "other"
    result = run(tmp_path, bhr)
    assert result.returncode != 0
    assert "nothing applied" in result.stderr


def test_the_plugin_is_listed_and_can_be_disabled(tmp_path: Path, bhr: FakeBambooHR) -> None:
    listed = subprocess.run(
        [ALLOTMENT, "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ALLOTMENT_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"},
    )
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["bamboohr"]["hooks"] == ["sync_directory"]
    disabled = run(tmp_path, bhr, "--json", ALLOTMENT_DISABLE_PLUGINS="bamboohr")
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["sources"] == {}
