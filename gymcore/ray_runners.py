"""``gym collect --executor ray``: the runners of served collection, started as Ray actors.

Ray only places and owns the runners; everything else is served collection as it is with
``--server``: each actor is a ``gym serve`` runner (:mod:`gymcore.server`) bound to its
node's address on a free port, with a token made for this run, and the driver reaches it
over HTTP through :class:`~gymcore.remote.ServedRunner`. No rollout passes through Ray's
object store, and the driver (the ``gym collect`` process) stays the only writer.

The runner runs *inside* the actor's process, in the actor's event loop, not as a
subprocess of it: the runner then lives and dies with the actor (``ray.kill``, a lost node,
the driver exiting all end it, and no orphan process can outlive it), and starting one
costs no second interpreter. Actors are never restarted (``max_restarts=0``): a runner that
dies fails the rollouts it held with class ``server:runner``, and ``--resume`` redoes them.

The actors and their placement group are released when the run ends, however it ends
(:meth:`RayRunner.aclose` runs in the collector's ``finally``); should the driver itself be
killed, Ray ends the actors and placement group a job owns when its driver goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson

from .agent import AgentConfig
from .data import Rollout, Task
from .errors import GymError

INSTALL_HINT = "--executor ray needs Ray on this machine and every node: pip install 'gymcore[ray]'"

#: CPUs one runner reserves in its placement-group bundle: a runner is one asyncio process.
RUNNER_CPUS = 1.0
#: Ray namespace of the runner actors (named gym-runner-RUN-N).
ACTOR_NAMESPACE = "gym"
#: Seconds a runner gets to end its sessions before its actor is killed.
STOP_GRACE_S = 5.0


@attrs.define
class RayOptions:
    """Where and how many runners: mirrors ``--ray-address``, ``--workers``, ``--one-per-node``."""

    #: ``None``: a Ray started for this run on this machine (or ``$RAY_ADDRESS``); ``auto``:
    #: the cluster started here with ``ray start``; ``HOST:PORT``: that cluster's head
    address: str | None = None
    #: runners to start; ``None``: one per alive node
    workers: int | None = None
    #: STRICT_SPREAD (at most one runner per node) instead of SPREAD (as spread as fits)
    one_per_node: bool = False
    #: seconds the cluster gets to place the runners and start them
    start_timeout: float = 120.0
    #: ``--model-url``: base URLs of the model's replicas, handed to every runner
    model_urls: list[str] = attrs.field(factory=list)


def import_ray():
    """Ray, imported only for ``--executor ray``; a clear install hint without it."""
    try:
        import ray
    except ImportError:
        raise GymError(INSTALL_HINT) from None
    return ray


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class RunnerActor:
    """One ``gym serve`` runner in a Ray actor's process; made a Ray actor class by
    :func:`_actor_class` (so importing this module never imports Ray)."""

    def __init__(self) -> None:
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self, agent: str, model: str, token: str, config: AgentConfig,
                    model_urls: list[str] | None = None) -> dict[str, Any]:
        """Bind to this node's address on a free port; return where (or the error, as text:
        the driver names the node)."""
        import ray

        from .limits import raise_open_files_to_hard_limit
        from .plugins import load_plugins
        from .server import create_app, serving

        node = {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}
        try:
            if model_urls:  # as `gym serve --model-url` does: read by OpenAI-compatible backends
                os.environ["OPENAI_BASE_URL"] = ",".join(model_urls)
            raise_open_files_to_hard_limit()
            # the driver's loop settings (step bound, retries, --model-timeout, --judge-model,
            # --return-tokens), as `gym serve` takes them from its own options
            app = create_app(load_plugins(), [agent], model, token, agent_config=config)
            stack = contextlib.AsyncExitStack()
            url = await stack.enter_async_context(serving(app, node["node_ip"], 0, grace=STOP_GRACE_S))
        except Exception as exc:  # reported by the driver with the node's name
            return {**node, "error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, GymError) else str(exc)}
        self._stack = stack
        return {**node, "url": url}

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish briefly, end open sessions."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        ray = import_ray()
        # max_restarts=0: a runner that dies stays dead; its rollouts fail as server:runner.
        _ACTOR_CLASS = ray.remote(num_cpus=RUNNER_CPUS, max_restarts=0, max_task_retries=0)(RunnerActor)
    return _ACTOR_CLASS


def _node_name(info: dict[str, Any]) -> str:
    return f"node {info['node_ip']} (id {str(info['node_id'])[:12]})"


def runner_signature(index: dict[str, Any], agent: str) -> dict[str, Any]:
    """What must be the same on every runner: the model, the agent, every plugin's version."""
    agents = {a["name"]: {k: a.get(k) for k in ("environments", "tools", "model", "is_replay")}
              for a in index.get("agents", [])}
    plugins = {p["name"]: {"kind": p.get("kind"), "version": p.get("version"), "error": p.get("error")}
               for p in index.get("plugins", [])}
    return {"model_spec": index.get("model_spec"), "agent": agents.get(agent), "plugins": plugins}


def signature_differences(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """One phrase per difference of ``other`` from ``first`` (empty: the same)."""
    out = []
    if first["model_spec"] != other["model_spec"]:
        out.append(f"model {other['model_spec']!r} there, {first['model_spec']!r} on the first")
    if first["agent"] != other["agent"]:
        out.append(f"agent {orjson.dumps(other['agent']).decode()} there, {orjson.dumps(first['agent']).decode()} "
                   "on the first")
    for name in sorted(set(first["plugins"]) | set(other["plugins"])):
        a, b = first["plugins"].get(name), other["plugins"].get(name)
        if a == b:
            continue
        if b is None:
            out.append(f"plugin {name} missing there")
        elif a is None:
            out.append(f"plugin {name} there only")
        else:
            out.append(f"plugin {name}: {b} there, {a} on the first")
    return out


class RayRunner:
    """The :class:`~gymcore.runners.RolloutRunner` of ``--executor ray``: a
    :class:`~gymcore.remote.ServedRunner` over runners it started as Ray actors, and released."""

    def __init__(self, ray: Any, options: RayOptions, started_ray: bool):
        self.ray = ray
        self.options = options
        self.started_ray = started_ray
        self.placement_group = None
        self.actors: list[Any] = []
        self.infos: list[dict[str, Any]] = []
        self.token = secrets.token_urlsafe(32)
        self.served = None  # the ServedRunner, once the runners are up

    # --- what the collector reads -------------------------------------------------------
    @property
    def agent(self) -> str:
        return self.served.agent

    @property
    def model_label(self) -> str:
        return self.served.model_label

    @property
    def judge_model(self) -> str | None:  # as the runners report it (they got the driver's)
        return self.served.judge_model

    @property
    def return_tokens(self) -> bool:
        return self.served.return_tokens

    @property
    def is_replay(self) -> bool:
        return self.served.is_replay

    @property
    def example_dataset_path(self) -> Path | None:
        return self.served.example_dataset_path

    @property
    def example_dataset_name(self) -> str | None:
        # the runners' URLs change every run: name the dataset by agent, so a resumed run reads the same
        return f"ray:{self.served.agent}/dataset" if self.served.example_dataset_path else None

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout:
        return await self.served.run(task, task_index, rollout_index)

    # --- life cycle -----------------------------------------------------------------------
    @classmethod
    async def create(cls, options: RayOptions, agent: str, model: str, config: AgentConfig, *,
                     need_dataset: bool = False) -> "RayRunner":
        """Connect to (or start) Ray, place and start the runners, check they are alike,
        then connect the served-collection client to them. Nothing is left behind on error."""
        ray = import_ray()
        started_ray = not ray.is_initialized()
        if started_ray:
            import logging

            kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
            # "local" starts a Ray of our own for this run only (never a stale one found on disk)
            address = options.address or os.environ.get("RAY_ADDRESS") or "local"
            if address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise GymError(f"cannot connect to Ray at {address}: {exc}") from None
        self = cls(ray, options, started_ray)
        try:
            await self._start(agent, model, config)
            from .remote import ServedRunner

            self.served = await ServedRunner.create([i["url"] for i in self.infos], agent, config, token=self.token,
                                                    model=model, need_dataset=need_dataset)
        except BaseException:
            await self.release()
            raise
        return self

    async def _start(self, agent: str, model: str, config: AgentConfig) -> None:
        ray = self.ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        workers = self.options.workers or len(nodes)
        strategy = "STRICT_SPREAD" if self.options.one_per_node else "SPREAD"
        self.placement_group = placement_group([{"CPU": RUNNER_CPUS}] * workers, strategy=strategy)
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers * RUNNER_CPUS > cpus or (self.options.one_per_node and workers > len(nodes)):
            # an autoscaling cluster may still grow: say so, and wait rather than refuse
            print(f"gym: the cluster has {len(nodes)} nodes and {cpus:g} CPUs for {workers} runners ({strategy}); "
                  f"waiting up to {self.options.start_timeout:g}s for it to grow", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(self.placement_group.ready(), self.options.start_timeout)
        except asyncio.TimeoutError:
            raise GymError(f"the Ray cluster could not place {workers} runners ({strategy}, {RUNNER_CPUS:g} CPU each) "
                           f"in {self.options.start_timeout:g}s: it has {len(nodes)} alive nodes and {cpus:g} CPUs"
                           + ("; --one-per-node needs a node per runner" if self.options.one_per_node else "")
                           ) from None
        actor_class = _actor_class()
        # named (gym-runner-RUN-N in namespace "gym") so `ray list actors` tells whose they are
        run_id = secrets.token_hex(4)
        self.actors = [actor_class.options(
            name=f"gym-runner-{run_id}-{i + 1}", namespace=ACTOR_NAMESPACE,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=i),
        ).remote() for i in range(workers)]
        refs = [actor.start.remote(agent, model, self.token, config, self.options.model_urls)
                for actor in self.actors]
        try:
            self.infos = await asyncio.wait_for(asyncio.gather(*refs), self.options.start_timeout)
        except asyncio.TimeoutError:
            raise GymError(f"the {workers} Ray runners did not start in {self.options.start_timeout:g}s") from None
        except ray.exceptions.RayError as exc:
            raise GymError(f"a Ray runner died while starting: {str(exc).splitlines()[0]}") from None
        for info in self.infos:
            if "error" in info:
                raise GymError(f"the runner on {_node_name(info)} cannot start: {info['error']} "
                               "(plugins and their settings must be on every node)")
        await self._check_alike(agent)
        for n, info in enumerate(self.infos, 1):
            print(f"gym: ray runner {n}/{workers} on {_node_name(info)} at {info['url']}", file=sys.stderr, flush=True)

    async def _indexes(self, timeout: float) -> list[dict[str, Any] | None]:
        """Each runner's ``GET /`` (its agents, model and plugin inventory); None if it is gone."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async def one(url: str) -> dict[str, Any] | None:
                try:
                    async with http.get(url + "/") as resp:
                        return orjson.loads(await resp.read()) if resp.status == 200 else None
                except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                    return None

            return await asyncio.gather(*(one(info["url"]) for info in self.infos))

    async def _check_alike(self, agent: str) -> None:
        """Every runner hosts the same agent, model and plugin versions, or one error names the node."""
        from .runners import split_agent

        name = "+".join(split_agent(agent))
        indexes = await self._indexes(30.0)
        for info, index in zip(self.infos, indexes):
            if index is None:
                raise GymError(f"the runner on {_node_name(info)} at {info['url']} cannot be reached from this "
                               "machine (is the node's address routable from the driver?)")
        first = runner_signature(indexes[0], name)
        for info, index in zip(self.infos[1:], indexes[1:]):
            differences = signature_differences(first, runner_signature(index, name))
            if differences:
                raise GymError(f"the runner on {_node_name(info)} differs from the one on {_node_name(self.infos[0])}: "
                               + "; ".join(differences) + " (install the same plugins on every node)")

    async def report(self) -> None:
        """One stderr line per runner: how many rollouts it ran (or that it is gone)."""
        if not self.infos:
            return
        indexes = await self._indexes(5.0)
        for n, (info, index) in enumerate(zip(self.infos, indexes), 1):
            done = f"{index['stats']['rollouts']} rollouts" if index else "gone (its rollouts in flight failed)"
            print(f"gym: ray runner {n}/{len(self.infos)} on {_node_name(info)}: {done}", file=sys.stderr, flush=True)

    async def aclose(self) -> None:
        try:
            if self.served is not None:
                await self.served.aclose()
            await self.report()
        finally:
            await self.release()

    async def release(self) -> None:
        """Stop the runners (briefly), kill their actors, remove the placement group, and
        leave Ray if this run joined it. Safe to call at any point and more than once."""
        ray = self.ray
        actors, self.actors = self.actors, []
        try:
            if actors:
                stops = [actor.stop.remote() for actor in actors]
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), STOP_GRACE_S)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            group, self.placement_group = self.placement_group, None
            if group is not None:
                with contextlib.suppress(Exception):
                    ray.util.remove_placement_group(group)
            if self.started_ray:
                self.started_ray = False
                ray.shutdown()
