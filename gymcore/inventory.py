"""What is installed, as plain rows: shared by ``gym plugins list`` and the runner."""

from __future__ import annotations

import asyncio
from typing import Any

from .backends import model_backends
from .environment import Environment
from .plugins import Plugins, load_plugins


def plugin_inventory(plugins: Plugins | None = None) -> list[dict[str, Any]]:
    """One dict per plugin: name, kind, distribution, version, hooks, tools, backends, error."""
    plugins = plugins or load_plugins()
    backends = model_backends(plugins)
    rows = []
    for name, info in sorted(plugins.infos.items()):
        tools: list[str] = []
        error = info.error
        if info.kind == "resource" and error is None:
            try:
                env = asyncio.run(Environment.create(plugins, [name]))
                tools = [t["name"] for t in env.tools]
            except Exception as exc:  # report, do not crash the listing
                error = f"{type(exc).__name__}: {exc}"
        rows.append({
            "name": name,
            "kind": info.kind,
            "distribution": info.distribution,
            "version": info.version,
            "hooks": info.hooks,
            "tools": tools,
            "backends": sorted(p for p, b in backends.items() if b.plugin == name),
            "error": error,
        })
    return rows
