"""An environment: one or more resource plugins composed into one tool set and one verifier.

Tool calls are routed by name to the plugin that listed the tool (never by pluggy's
``firstresult``, which would take an ``async def`` plugin's coroutine as an answer), and
whatever a hook returns is awaited here, in one place. Plain ``def`` hooks run in the
environment's own :class:`~gymcore.hook_threads.HookThreads`, never asyncio's shared pool.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any, Callable

import orjson

from .data import Session, Task, Verdict, as_verdict
from .errors import EnvironmentBuildError, UnknownAgentError
from .hook_threads import MAX_THREADS, HookThreads
from .plugins import Plugins


class _PluginHooks:
    """The hooks of one plugin, each callable alone, with its sync/async nature known."""

    def __init__(self, plugins: Plugins, name: str, threads: HookThreads):
        manager = plugins.manager
        plugin = plugins.get(name)
        others = [p for p in manager.get_plugins() if p is not plugin]
        self.name = name
        self.threads = threads
        self.callers: dict[str, tuple[Callable[..., list], bool]] = {}
        for hook in ("list_tools", "call_tool", "setup_session", "verify", "teardown_session",
                     "example_dataset", "example_rollouts"):
            caller = manager.subset_hook_caller(hook, remove_plugins=others)
            impls = caller.get_hookimpls()
            if impls:
                is_async = any(inspect.iscoroutinefunction(i.function) for i in impls)
                self.callers[hook] = (caller, is_async)

    def has(self, hook: str) -> bool:
        return hook in self.callers

    async def call(self, hook: str, *, thread: bool = True, **kwargs: Any) -> Any:
        """Call ``hook`` on this plugin alone; return its result (awaited if async)."""
        caller, is_async = self.callers[hook]
        if is_async:
            result = caller(**kwargs)
        elif thread:
            result = await self.threads.run(f"{self.name}.{hook}", caller, **kwargs)
        else:
            result = caller(**kwargs)
        if isinstance(result, list):  # a non-firstresult hook: one entry per implementation
            result = result[0] if result else None
        if inspect.isawaitable(result):
            result = await result
        return result


def tool_output_text(value: Any) -> str:
    """What the model sees of a tool's return value: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def error_output(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


class Environment:
    """Resource plugins ``names`` composed; build with :meth:`create` (it lists the tools).
    ``threads``: how many plain ``def`` hook calls may run at once (one per rollout in
    flight is enough; capped at :data:`~gymcore.hook_threads.MAX_THREADS`)."""

    def __init__(self, plugins: Plugins, names: list[str], *, threads: int = MAX_THREADS):
        known = plugins.names("resource")
        for name in names:
            if name not in known:
                hint = ", ".join(known) or "none installed"
                raise UnknownAgentError(f"unknown agent {name!r} (installed environments: {hint})")
        self.names = list(names)
        self.name = "+".join(names)
        self.threads = HookThreads(threads, name=f"gym-hook-{self.name}")
        self._plugins = [_PluginHooks(plugins, name, self.threads) for name in names]
        self.tools: list[dict[str, Any]] = []
        self._route: dict[str, _PluginHooks] = {}
        self.example_dataset_path: Path | None = None
        self.example_rollouts_path: Path | None = None

    @classmethod
    async def create(cls, plugins: Plugins, names: list[str], *, threads: int = MAX_THREADS) -> "Environment":
        env = cls(plugins, names, threads=threads)
        await env._gather_tools()
        env.example_dataset_path = await env._first_path("example_dataset")
        env.example_rollouts_path = await env._first_path("example_rollouts")
        return env

    async def _gather_tools(self) -> None:
        for plugin in self._plugins:
            if not plugin.has("list_tools"):
                continue
            tools = await plugin.call("list_tools", thread=False) or []
            for tool in tools:
                if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                    raise EnvironmentBuildError(f"plugin {plugin.name!r}: list_tools returned a tool without a name: {tool!r}")
                name = tool["name"]
                if name in self._route:
                    raise EnvironmentBuildError(
                        f"tool {name!r} is offered by both {self._route[name].name!r} and {plugin.name!r}"
                    )
                self._route[name] = plugin
                self.tools.append({"type": "function", **tool})

    # --- per-rollout ------------------------------------------------------------------

    async def open_session(self, task: Task, judge: Any = None) -> Session:
        session = Session(task=task, judge=judge)
        for plugin in self._plugins:
            if plugin.has("setup_session"):
                await plugin.call("setup_session", session=session)
        return session

    async def close_session(self, session: Session) -> None:
        for plugin in self._plugins:
            if plugin.has("teardown_session"):
                await plugin.call("teardown_session", session=session)

    async def call_tool(self, session: Session, name: str, arguments: str | dict) -> tuple[str, bool]:
        """Run a model's tool call; return ``(output text, ok)``. Never raises for bad calls:
        a malformed call or a failing tool becomes an error output the model can read."""
        plugin = self._route.get(name)
        if plugin is None or not plugin.has("call_tool"):
            return error_output(f"unknown tool {name!r}; available: {', '.join(self._route) or 'none'}"), False
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments) if arguments.strip() else {}
            except orjson.JSONDecodeError as exc:
                return error_output(f"arguments of {name!r} are not valid JSON: {exc}"), False
        if not isinstance(arguments, dict):
            return error_output(f"arguments of {name!r} must be a JSON object"), False
        try:
            value = await plugin.call("call_tool", name=name, arguments=arguments, session=session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return error_output(f"tool {name!r} failed: {type(exc).__name__}: {exc}"), False
        return tool_output_text(value), True

    async def verify(self, session: Session, response: dict[str, Any]) -> Verdict:
        verdicts: list[Verdict] = []
        for plugin in self._plugins:
            if plugin.has("verify"):
                value = await plugin.call("verify", session=session, response=response)
                verdict = as_verdict(value, where=f"{plugin.name}.verify")
                if verdict is not None:
                    verdicts.append(verdict)
        if not verdicts:
            return Verdict(reward=1.0)
        if len(verdicts) == 1:
            return verdicts[0]
        reward = 1.0
        metrics: dict[str, Any] = {}
        components: dict[str, float] | None = None
        for verdict in verdicts:
            reward *= verdict.reward
            metrics.update(verdict.metrics)
            if verdict.reward_components is not None:
                components = {**(components or {}), **verdict.reward_components}
        return Verdict(reward=reward, metrics=metrics, reward_components=components)

    # --- bundled data -----------------------------------------------------------------

    async def _first_path(self, hook: str) -> Path | None:
        for plugin in self._plugins:
            if plugin.has(hook):
                value = await plugin.call(hook, thread=False)
                if value:
                    return Path(value)
        return None
