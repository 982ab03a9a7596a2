"""The tutorial's example plugin, installed for real and loaded through its entry point.

``docs/examples/allotment-hello`` is what plugin authors copy, so it must keep working as shipped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment import Denied, Usage
from allotment.outbox import deliver
from allotment.plugins import describe_plugins
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "allotment-hello"
ALLOTMENT = str(Path(sys.executable).with_name("allotment"))
HELLO_HOOKS = ["check_policy", "register_commands", "usage_recorded"]
# the sample schema allows prod/staging/dev only; let the plugin be the one that refuses
CONFIG = SAMPLE_CONFIG.replace("[prod, staging, dev]", "[prod, staging, dev, forbidden]")


def _installed_copy_is_current() -> bool:
    try:
        dist = importlib.metadata.distribution("allotment-hello")
    except importlib.metadata.PackageNotFoundError:
        return False
    module = "allotment_hello/__init__.py"
    installed = Path(str(dist.locate_file(module)))
    source = (EXAMPLE / module).read_text(encoding="utf-8")
    entry_points = {(ep.group, ep.name, ep.value) for ep in dist.entry_points}
    return (
        installed.is_file()
        and installed.read_text(encoding="utf-8") == source
        and entry_points == {("allotment", "hello", "allotment_hello")}
    )


@pytest.fixture(scope="session")
def hello_installed() -> None:
    """Install the example into this environment once (a no-op when it is already current)."""
    if not _installed_copy_is_current():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--force-reinstall",
                str(EXAMPLE),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        importlib.invalidate_caches()
    assert _installed_copy_is_current()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in ("ALLOTMENT_DISABLE_PLUGINS", "ALLOTMENT_LOAD_PLUGINS", "ALLOTMENT_HELLO_LOG"):
        monkeypatch.delenv(name, raising=False)
    yield dict(os.environ)


def allotment(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(env, ALLOTMENT_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    result = subprocess.run(
        [ALLOTMENT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def test_allotment_plugins_lists_hello_with_its_hooks(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path
) -> None:
    plugins = {p["name"]: p for p in json.loads(allotment(tmp_path, clean_env, "plugins").stdout)}
    assert plugins["hello"]["hooks"] == HELLO_HOOKS
    assert plugins["hello"]["builtin"] is False
    assert plugins["allotment.defaults.policy"]["builtin"] is True


def test_disabled_plugin_is_not_loaded(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(clean_env, ALLOTMENT_DISABLE_PLUGINS="hello")
    names = {p["name"] for p in json.loads(allotment(tmp_path, env, "plugins").stdout)}
    assert "hello" not in names and "allotment.defaults.policy" in names

    result = subprocess.run(
        [ALLOTMENT, "hello"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0  # its command is gone with it


def test_load_plugins_restricts_entry_points(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(clean_env, ALLOTMENT_LOAD_PLUGINS="hello")
    plugins = json.loads(allotment(tmp_path, env, "plugins").stdout)
    assert [p["name"] for p in plugins if not p["builtin"]] == ["hello"]


def test_hello_command_comes_from_the_plugin(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path
) -> None:
    assert allotment(tmp_path, clean_env, "hello").stdout == "hello from allotment-hello\n"


def test_entry_point_policy_denies_only_the_forbidden_environment(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path
) -> None:
    import allotment_hello

    with temporary_runtime(tmp_path, config=CONFIG, load_entrypoints=True) as rt:
        assert rt.pm.get_plugin("hello") is allotment_hello  # loaded by entry point, not by hand
        assert {info.name: list(info.hooks) for info in describe_plugins(rt.pm)}["hello"] == HELLO_HOOKS
        key, _key_id = rt.admin.issue_key("ada@acme.example")

        refused = intent(key, labels={"environment": "forbidden"})
        with pytest.raises(Denied) as denied:
            rt.admit(refused)
        assert (denied.value.status, denied.value.code) == (403, "environment_forbidden")
        assert rt.reservation_state(refused.request_id) is None

        for labels in ({"environment": "staging"}, {}, {"feature": "forbidden"}):
            admission = rt.admit(intent(key, labels=labels))
            assert rt.reservation_state(admission.request_id) == "open"


def test_usage_log_gets_each_event_with_its_exact_cost_only_when_configured(
    hello_installed: None, clean_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "hello.log"
    # gpt-5.4-mini: 8,000 x $0.75 + 2,000 x $0.075 + 1,200 x $4.50 per 1M = $0.01155
    usage = Usage(input_tokens=8000, cache_read_tokens=2000, output_tokens=1200)
    with temporary_runtime(tmp_path, load_entrypoints=True) as rt:
        key, _key_id = rt.admin.issue_key("ada@acme.example")

        quiet = rt.admit(intent(key))
        rt.settle(quiet.request_id, usage)
        assert deliver(rt).errors == []
        assert not log.exists()  # inert without ALLOTMENT_HELLO_LOG

        monkeypatch.setenv("ALLOTMENT_HELLO_LOG", str(log))
        loud = rt.admit(intent(key))
        event = rt.settle(loud.request_id, usage)
        assert event.cost_nanos == 11_550_000
        assert not log.exists()  # observers never run inside settle
        assert deliver(rt).errors == []
        assert log.read_text(encoding="utf-8") == f"{loud.request_id} 11550000\n"
        deliver(rt)
        assert log.read_text(encoding="utf-8") == f"{loud.request_id} 11550000\n"  # delivered once
