"""The plugin manager factory and the typed wrapper through which the core calls hooks.

Built-in behaviour is registered as ordinary plugins; installed packages come in through
the ``allotment`` entry-point group, exactly like third-party plugins.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pluggy

from allotment import hookspecs
from allotment.errors import ConfigError
from allotment.types import (
    CallIntent,
    Decision,
    DirectoryChanges,
    ExportResult,
    Outcome,
    Price,
    Principal,
    Reservation,
    Usage,
    UsageEvent,
)

ENTRY_POINT_GROUP = "allotment"
DISABLE_ENV = "ALLOTMENT_DISABLE_PLUGINS"
LOAD_ENV = "ALLOTMENT_LOAD_PLUGINS"


def _names_from_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


# (distribution name, version) of plugins loaded from entry points, by plugin identity
_DISTS: dict[int, tuple[str, str]] = {}


def create_plugin_manager(
    defaults: Iterable[tuple[str, object]] = (),
    *,
    load_entrypoints: bool = True,
    extra: Iterable[tuple[str, object]] = (),
    environ: dict[str, str] | None = None,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    ``defaults`` are the core's built-in plugins (name, plugin); installed entry points
    of group ``allotment`` are loaded next, then ``extra`` (tests, embedding apps).
    ``ALLOTMENT_DISABLE_PLUGINS`` blocks plugins by name (built-ins included);
    ``ALLOTMENT_LOAD_PLUGINS`` restricts entry points to the listed names.
    """
    env = os.environ if environ is None else environ
    disabled = _names_from_env(env.get(DISABLE_ENV)) or set()
    only = _names_from_env(env.get(LOAD_ENV))

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    for name, plugin in defaults:
        pm.register(plugin, name=name)
    if load_entrypoints:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if only is not None and ep.name not in only:
                continue
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise ConfigError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {exc}",
                    code="plugin_load_failed",
                ) from exc
            pm.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            if dist is not None:
                _DISTS[id(plugin)] = (dist.metadata["Name"], dist.version)
    for name, plugin in extra:
        pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"a plugin implements an unknown hook: {exc}", code="unknown_hook") from exc
    return pm


@dataclass(frozen=True)
class PluginInfo:
    name: str
    hooks: tuple[str, ...]
    version: str | None
    package: str | None
    builtin: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hooks": list(self.hooks),
            "version": self.version,
            "package": self.package,
            "builtin": self.builtin,
        }


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with the hooks it implements, sorted by name."""
    infos: list[PluginInfo] = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        package, version = _DISTS.get(id(plugin), (None, None))
        infos.append(
            PluginInfo(
                name=name,
                hooks=hooks,
                version=version,
                package=package,
                builtin=name.startswith("allotment.defaults."),
            )
        )
    return sorted(infos, key=lambda info: info.name)


class Hooks:
    """Typed calls into the plugin manager (one place to check every call site)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._hook = pm.hook

    def authenticate(self, credential: str, context: dict[str, Any]) -> Principal | None:
        result: Principal | None = self._hook.authenticate(credential=credential, context=context)
        return result

    def check_policy(self, principal: Principal, intent: CallIntent) -> Decision | None:
        """Run every policy; return the first deny, or None if all allow or abstain."""
        decisions: Sequence[Decision | None] = self._hook.check_policy(principal=principal, intent=intent)
        # in call order: plugins before the built-in (trylast) policy, so theirs is reported
        for decision in decisions:
            if decision is not None and not decision.allowed:
                return decision
        return None

    def price(
        self, provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str
    ) -> Price | None:
        result: Price | None = self._hook.price(
            provider=provider, model=model, usage=usage, at=at, endpoint_mode=endpoint_mode
        )
        return result

    def reserve(self, principal: Principal, intent: CallIntent, amount: int) -> Reservation | None:
        result: Reservation | None = self._hook.reserve(principal=principal, intent=intent, amount=amount)
        return result

    def reconcile(
        self,
        reservation: Reservation | None,
        intent: CallIntent,
        principal: Principal | None,
        usage: Usage,
        price: Price,
        outcome: Outcome,
        enforced: bool,
        details: dict[str, Any],
    ) -> UsageEvent | None:
        result: UsageEvent | None = self._hook.reconcile(
            reservation=reservation,
            intent=intent,
            principal=principal,
            usage=usage,
            price=price,
            outcome=outcome,
            enforced=enforced,
            details=details,
        )
        return result

    def export(self, kind: str, period: str, options: dict[str, Any]) -> ExportResult | None:
        result: ExportResult | None = self._hook.export(kind=kind, period=period, options=options)
        return result

    def sync_directory(self, since: datetime | None, config: dict[str, Any]) -> list[DirectoryChanges]:
        results: list[DirectoryChanges | None] = self._hook.sync_directory(since=since, config=config)
        return [r for r in results if r is not None]

    def runtime_opened(self, runtime: Any) -> None:
        self._hook.runtime_opened(runtime=runtime)

    def register_jobs(self, scheduler: Any) -> None:
        self._hook.register_jobs(scheduler=scheduler)

    def register_routes(self, app: Any) -> None:
        self._hook.register_routes(app=app)

    def register_commands(self, cli: Any) -> None:
        self._hook.register_commands(cli=cli)
