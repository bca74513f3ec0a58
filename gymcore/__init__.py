"""gymcore: collect scored agent rollouts through pluggable environments and model backends.

Plugins import only this package: ``from gymcore import hookimpl``.
"""

import pluggy

__version__ = "0.1.0"

#: Mark a function or method as an implementation of a gymcore hook.
hookimpl = pluggy.HookimplMarker("gym")

__all__ = ["hookimpl", "__version__"]
