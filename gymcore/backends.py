"""Model backends: from a ``--model PREFIX:NAME`` spec to an object that answers requests.

Backends come from plugins' ``register_models`` hooks (see :mod:`gymcore.hookspecs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

import attrs

from .errors import GymError, ModelError, UsageError
from .plugins import Plugins

if TYPE_CHECKING:  # the openai SDK's typed request params, for type checkers only (no import cost)
    from openai.types.responses import ResponseCreateParams

__all__ = ["ModelBackend", "ModelContext", "ModelError", "BackendInfo", "model_backends", "create_backend",
           "DEFAULT_MODEL_TIMEOUT"]

#: Seconds one model call may take by default (each attempt; the openai SDK's default too).
DEFAULT_MODEL_TIMEOUT = 600.0


class ModelBackend(Protocol):
    label: str

    async def create_response(self, request: ResponseCreateParams) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@attrs.define
class ModelContext:
    """What a backend factory may use besides the model name."""

    environment: Any = None  # gymcore.environment.Environment or None
    options: dict[str, Any] = attrs.field(factory=dict)
    #: seconds one call may take (each attempt: the agent loop retries a timeout); past it,
    #: raise ``ModelError(kind="timeout")``. ``None``: the backend's own default. A backend
    #: that calls no server (``replay``) ignores it.
    timeout: float | None = None
    #: ``--return-tokens``: put ``prompt_token_ids``, ``generation_token_ids`` and
    #: ``generation_log_probs`` on the last output item of every reply (see
    #: :mod:`gymcore.tokens`); a backend that cannot should raise ``GymError`` saying so.
    #: One that ignores it fails every call as ``model:no_tokens``.
    return_tokens: bool = False


@attrs.define
class BackendInfo:
    prefix: str
    factory: Callable[[str, ModelContext], Any]
    description: str
    plugin: str


def model_backends(plugins: Plugins) -> dict[str, BackendInfo]:
    """Every registered backend prefix, from every model plugin's ``register_models``."""
    found: dict[str, BackendInfo] = {}
    for name in plugins.names("model") + plugins.names("resource"):
        plugin = plugins.get(name)
        caller = plugins.manager.subset_hook_caller(
            "register_models", remove_plugins=[p for p in plugins.manager.get_plugins() if p is not plugin]
        )

        def register(prefix: str, factory: Callable, description: str = "", _plugin: str = name) -> None:
            if prefix in found:
                raise GymError(f"model prefix {prefix!r} is registered by both {found[prefix].plugin!r} and {_plugin!r}")
            found[prefix] = BackendInfo(prefix, factory, description, _plugin)

        caller(register=register)
    return found


def split_model_spec(spec: str) -> tuple[str, str]:
    prefix, _, name = spec.partition(":")
    return prefix, name


def create_backend(plugins: Plugins, spec: str, context: ModelContext, *, option: str = "--model") -> ModelBackend:
    """Build the backend named by ``spec`` (``openai:gpt-4.1-mini``, ``replay``, ...);
    ``option`` names where the user gave it, for the error."""
    backends = model_backends(plugins)
    prefix, name = split_model_spec(spec)
    info = backends.get(prefix)
    if info is None:
        known = ", ".join(sorted(backends)) or "none installed"
        raise UsageError(f"unknown model backend {prefix!r} in {option} {spec!r} (installed: {known})")
    return info.factory(name, context)
