"""gymcore: collect scored agent rollouts through pluggable environments and model backends.

Plugins import only this package: ``from gymcore import hookimpl``. A trainer drives
collection in-process with ``gymcore.Collector`` (imported on first use, so that
``import gymcore`` stays cheap for plugins and the CLI).
"""

from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

#: Mark a function or method as an implementation of a gymcore hook.
hookimpl = pluggy.HookimplMarker("gym")

__all__ = ["hookimpl", "__version__", "Collector", "RolloutGroup", "RunStopped"]

if TYPE_CHECKING:
    from .collector import Collector, RolloutGroup, RunStopped

_LAZY = {"Collector", "RolloutGroup", "RunStopped"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import collector

        return getattr(collector, name)
    raise AttributeError(f"module 'gymcore' has no attribute {name!r}")
