"""Per-row environments: a row's ``agent_ref.name`` picks the environment it runs in.

NeMo Gym's datasets mix environments by ``agent_ref`` (``{"name": ..., "type": ...}``); a
row without one runs in ``--agent`` (which may be left out when every row has one). Every
environment a run needs is checked (installed, or hosted by a ``--server`` runner) and built
once, before the first rollout; an unknown name is an input error naming its first line.
:class:`RoutingRunner` is the collector's runner: it hands each rollout to the runner of its
row's environment, embedded or served.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import orjson

from .data import Rollout, Task
from .dataset import InputScan
from .errors import GymError
from .metrics import RunStats
from .reach import ModelReach
from .runners import RolloutRunner, split_agent

AGENT_REF = "agent_ref"


def row_environment(task: Task, default: str | None) -> str | None:
    """The environment ``task`` runs in: its ``agent_ref.name``, else ``default``."""
    ref = task.extra.get(AGENT_REF) if task.extra else None
    if isinstance(ref, dict) and isinstance(ref.get("name"), str):
        return "+".join(split_agent(ref["name"]))
    return default


class UnknownEnvironmentError(GymError):
    """Rows name environments this run cannot run (not installed, or no runner hosts them)."""


class RoutingRunner:
    """A :class:`~gymcore.runners.RolloutRunner` over one runner per environment, built once
    each by ``build`` (:meth:`prepare` builds all a run needs before it starts)."""

    def __init__(self, default: RolloutRunner | None, default_name: str | None,
                 build: Callable[[str], Awaitable[RolloutRunner]], available: Callable[[], list[str]]):
        self.default_name = default_name
        self.runners: dict[str, RolloutRunner] = {default_name: default} if default is not None else {}
        self._build, self._available = build, available
        self._building = asyncio.Lock()
        self._wrap: Callable[[Any], Any] | None = None
        self.agent = default.agent if default is not None else ""
        self.model_label = default.model_label if default is not None else ""
        self.is_replay = bool(default is not None and default.is_replay)
        self.example_dataset_path = default.example_dataset_path if default is not None else None
        self.example_dataset_name = default.example_dataset_name if default is not None else None
        self.reach = getattr(default, "reach", None) if default is not None else None
        #: what the run record says of the runners (served ones report their own settings)
        self.judge_model = getattr(default, "judge_model", None)
        self.return_tokens = bool(getattr(default, "return_tokens", False))

    def wrap_models(self, wrap: Callable[[Any], Any]) -> None:
        """Wrap the model backend of every runner in this process, now and built later
        (``--parallel auto`` watches the calls this way); served runners call their own."""
        self._wrap = wrap
        for runner in self.runners.values():
            self._wrapped(runner)

    def _wrapped(self, runner: RolloutRunner) -> RolloutRunner:
        if self._wrap is not None and hasattr(runner, "model"):
            runner.model = self._wrap(runner.model)
        return runner

    def environment_for(self, task: Task) -> str:
        return row_environment(task, self.default_name) or ""

    async def prepare(self, scan: InputScan) -> None:
        """Check that every environment the input names can run, then build each once."""
        if scan.without_agent_ref and self.default_name is None:
            raise UnknownEnvironmentError(
                f"{scan.path}:{scan.first_without_agent_ref}: field 'agent_ref': missing, and no --agent was given "
                f"for such rows ({scan.without_agent_ref} rows have no agent_ref): pass --agent NAME as their default")
        available = set(self._available())
        errors = []
        for name, (count, line) in scan.agent_refs.items():
            wanted = "+".join(split_agent(name))
            if wanted in self.runners:
                continue
            missing = [part for part in split_agent(name) if part not in available]
            if missing:
                errors.append(f"{scan.path}:{line}: field 'agent_ref.name': environment {name!r} is not available "
                              f"({', '.join(missing)} missing; {count} row(s) name it; available: "
                              f"{', '.join(sorted(available)) or 'none'})")
        if errors:
            raise UnknownEnvironmentError("\n".join(errors))
        for name in scan.agent_refs:
            wanted = "+".join(split_agent(name))
            if wanted not in self.runners:
                self.runners[wanted] = self._wrapped(await self._build(wanted))
        labels = {runner.model_label for runner in self.runners.values()}
        if not self.model_label:
            first = next(iter(self.runners.values()), None)
            if first is not None:
                self.model_label, self.is_replay = first.model_label, first.is_replay
                self.reach = self.reach or getattr(first, "reach", None)
        if len(labels) > 1 and not self.is_replay:
            raise GymError("the environments of this run would use different models: " + ", ".join(sorted(labels)))

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout:
        name = self.environment_for(task)
        runner = self.runners.get(name)
        if runner is None:  # rows the run did not scan first (the Python API's): built on first use
            async with self._building:
                runner = self.runners.get(name) or self._wrapped(await self._build(name))
                self.runners[name] = runner
        return await runner.run(task, task_index, rollout_index)

    def stuck_hook_calls(self) -> dict[str, int]:
        """Hook calls still stuck in the environments' threads (served runners keep their own)."""
        stuck: dict[str, int] = {}
        for runner in self.runners.values():
            for hook, count in getattr(runner, "stuck_hook_calls", dict)().items():
                stuck[hook] = stuck.get(hook, 0) + count
        return stuck

    async def aclose(self) -> None:
        errors = []
        for runner in self.runners.values():
            try:
                await runner.aclose()
            except Exception as exc:  # close the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]


async def embedded_routing_runner(plugins, config) -> RoutingRunner:
    """Environments built in this process, sharing one :class:`ModelReach`."""
    from .hook_threads import MAX_THREADS
    from .runners import EmbeddedRunner

    reach = ModelReach()
    # as many hook calls at once as rollouts in flight (--parallel auto: its ceiling)
    parallel = config.parallel if isinstance(config.parallel, int) and config.parallel > 0 else \
        getattr(config, "parallel_max", MAX_THREADS)
    threads = min(parallel, MAX_THREADS)

    async def build(name: str) -> RolloutRunner:
        return await EmbeddedRunner.create(plugins, name, config.model, config.agent_config, reach=reach,
                                           hook_threads=threads)

    default = await build(config.agent) if config.agent else None
    return RoutingRunner(default, "+".join(split_agent(config.agent)) if config.agent else None, build,
                         lambda: plugins.names("resource"))


async def served_routing_runner(config) -> RoutingRunner:
    """Environments on ``gym serve`` runners: each row goes to a runner hosting its environment."""
    import aiohttp

    from .remote import ServedRunner

    hosts: dict[str, list[str]] = {}
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in config.servers:
            url = url.rstrip("/")
            try:
                async with http.get(url + "/") as resp:
                    index: Any = orjson.loads(await resp.read()) if resp.status < 400 else {}
            except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                index = {}  # ServedRunner.create reports an unreachable runner itself
            for agent in index.get("agents", []) if isinstance(index, dict) else []:
                if isinstance(agent, dict) and isinstance(agent.get("name"), str):
                    hosts.setdefault(agent["name"], []).append(url)

    async def build(name: str, need_dataset: bool = False) -> RolloutRunner:
        # the runners hosting it; none: all of them, and ServedRunner says which host what
        return await ServedRunner.create(hosts.get(name) or list(config.servers), name, config.agent_config,
                                         token=config.token, model=config.model or None, need_dataset=need_dataset,
                                         server_timeout=config.server_timeout)

    default = None
    if config.agent:
        default = await build("+".join(split_agent(config.agent)), need_dataset=config.input is None)
    return RoutingRunner(default, "+".join(split_agent(config.agent)) if config.agent else None, build,
                         lambda: sorted(hosts))


class EnvironmentStats:
    """The run's figures per environment (a :class:`RunStats` each), for the summary."""

    def __init__(self, repeats: int, threshold: float):
        self.repeats, self.threshold = repeats, threshold
        self.stats: dict[str, RunStats] = {}

    def _for(self, name: str) -> RunStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = RunStats(repeats=self.repeats, threshold=self.threshold)
        return stats

    def add(self, rollout: Rollout) -> None:
        self._for(rollout.agent).add(rollout)

    def add_line(self, line: dict[str, Any]) -> None:
        self._for(str(line.get("agent") or "")).add_line(line)

    def summary(self) -> dict[str, Any]:
        """``{"environments": {name: figures}}`` when the run has more than one, else ``{}``."""
        if len(self.stats) < 2:
            return {}
        out = {}
        for name in sorted(self.stats):
            stats = self.stats[name]
            out[name] = {"rollouts": stats.rollouts, "scored": stats.scored, "failed": sum(stats.failures.values()),
                         "mean_reward": stats.mean_reward, **stats.pass_at()}
        return {"environments": out}


async def ray_routing_runner(config) -> RoutingRunner:
    """Runners Ray starts (``--executor ray``) host ``--agent``'s environment only: a row that
    names another is an input error naming its line, before anything starts."""
    from .ray_runners import RayRunner

    if not config.agent:
        raise GymError("--executor ray needs --agent: its runners host that environment")
    name = "+".join(split_agent(config.agent))
    runner = await RayRunner.create(config.ray, config.agent, config.model, config.agent_config,
                                    need_dataset=config.input is None)

    async def build(other: str) -> RolloutRunner:  # prepare() names the rows first; never reached
        raise GymError(f"--executor ray runs {name!r} only, not {other!r}")

    return RoutingRunner(runner, name, build, lambda: [name])
