"""Finding plugins: entry points in, one pluggy PluginManager out.

Every plugin, gymcore's own ``replay`` backend included, arrives through an entry point:
``gym.resources`` for environments, ``gym.models`` for model backends. A plugin that fails
to import is reported by name and skipped, so one broken package never bricks the CLI.
``GYM_LOAD_PLUGINS=a,b`` loads only the named plugins (empty: none), the escape hatch.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs

RESOURCE_GROUP = "gym.resources"
MODEL_GROUP = "gym.models"
KINDS = {RESOURCE_GROUP: "resource", MODEL_GROUP: "model"}


@attrs.define
class PluginInfo:
    """What ``gym plugins list`` shows for one plugin."""

    name: str
    kind: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    tools: list[str] = attrs.field(factory=list)
    error: str | None = None


@attrs.define
class Plugins:
    """A plugin manager plus what is known about each plugin (its kind and origin)."""

    manager: pluggy.PluginManager
    infos: dict[str, PluginInfo] = attrs.field(factory=dict)

    def register(self, plugin: Any, name: str, kind: str = "resource") -> None:
        """Register an in-process plugin (tests, notebooks) under ``name``."""
        self.manager.register(plugin, name=name)
        self.infos[name] = PluginInfo(name, kind, None, None, _hook_names(self.manager, plugin))

    def unregister(self, name: str) -> None:
        self.manager.unregister(name=name)
        self.infos.pop(name, None)

    def names(self, kind: str) -> list[str]:
        return sorted(n for n, i in self.infos.items() if i.kind == kind and i.error is None)

    def get(self, name: str) -> Any:
        return self.manager.get_plugin(name)


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("gym")
    manager.add_hookspecs(hookspecs)
    return manager


def _hook_names(manager: pluggy.PluginManager, plugin: Any) -> list[str]:
    callers = manager.get_hookcallers(plugin) or []
    return sorted(caller.name for caller in callers)


def _allowed() -> set[str] | None:
    value = os.environ.get("GYM_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins(*, entry_points: bool = True) -> Plugins:
    """Build a fresh :class:`Plugins` from installed entry points (no global state)."""
    plugins = Plugins(new_manager())
    if not entry_points:
        return plugins
    allowed = _allowed()
    for group, kind in KINDS.items():
        for ep in metadata.entry_points(group=group):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            if ep.name in plugins.infos:
                other = plugins.infos[ep.name]
                print(
                    f"gym: warning: plugin name {ep.name!r} from {dist} is already taken by "
                    f"{other.distribution}; skipped",
                    file=sys.stderr,
                )
                continue
            try:
                module = ep.load()
                plugins.manager.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the CLI down
                plugins.infos[ep.name] = PluginInfo(ep.name, kind, dist, version, [], error=f"{type(exc).__name__}: {exc}")
                print(f"gym: warning: plugin {ep.name!r} ({dist}) failed to load: {exc}", file=sys.stderr)
                continue
            plugins.infos[ep.name] = PluginInfo(ep.name, kind, dist, version, _hook_names(plugins.manager, module))
    return plugins
