"""The plugin manager factory: defaults as plugins, env switches, loud failures."""

from __future__ import annotations

import importlib.metadata

import pytest

from allotment import hookimpl
from allotment.errors import ConfigError
from allotment.plugins import create_plugin_manager, describe_plugins


class Greeter:
    @hookimpl
    def register_commands(self, cli: object) -> None:
        pass


class Misspelled:
    @hookimpl
    def usage_recorderd(self, event: object) -> None:  # a typo a plugin author could make
        pass


class FakeEntryPoint:
    def __init__(self, name: str, obj: object, value: str = "pkg:obj") -> None:
        self.name, self.value, self._obj = name, value, obj

    def load(self) -> object:
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    found: list[FakeEntryPoint] = []
    real = importlib.metadata.entry_points

    def fake(**kwargs: object) -> object:
        if kwargs.get("group") == "allotment":
            return list(found)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return found


def test_defaults_and_entry_points_are_registered(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("greeter", Greeter()))
    pm = create_plugin_manager([("allotment.defaults.x", Greeter())], environ={})
    names = {info.name: info for info in describe_plugins(pm)}
    assert names["greeter"].hooks == ("register_commands",)
    assert names["allotment.defaults.x"].builtin and not names["greeter"].builtin


def test_load_plugins_restricts_entry_points(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.extend([FakeEntryPoint("a", Greeter()), FakeEntryPoint("b", Greeter())])
    pm = create_plugin_manager(environ={"ALLOTMENT_LOAD_PLUGINS": "b"})
    assert {info.name for info in describe_plugins(pm)} == {"b"}


def test_disable_plugins_blocks_builtins_and_entry_points(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("a", Greeter()))
    pm = create_plugin_manager(
        [("allotment.defaults.x", Greeter())],
        environ={"ALLOTMENT_DISABLE_PLUGINS": "a, allotment.defaults.x"},
    )
    assert describe_plugins(pm) == []


def test_misspelled_hook_fails_loudly(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("typo", Misspelled()))
    with pytest.raises(ConfigError) as info:
        create_plugin_manager(environ={})
    assert info.value.code == "unknown_hook"
    assert "usage_recorderd" in info.value.message


def test_plugin_that_fails_to_import_is_named(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(
        FakeEntryPoint("broken", ImportError("no module named slack_sdk"), "allotment_x:plugin")
    )
    with pytest.raises(ConfigError) as info:
        create_plugin_manager(environ={})
    assert "plugin 'broken' (allotment_x:plugin) failed to import" in info.value.message
