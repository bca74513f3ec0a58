"""Batch collection: tasks in, one scored rollout per output line, written as each finishes.

The input is validated as a whole before the first rollout starts (streaming, so a large
file costs no memory), then streamed again while at most ``parallel`` rollouts are in
flight. Each finished rollout is written and flushed at once: a crash loses only what was
still running.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import attrs
import jsonlines
import orjson

from .agent import AgentConfig
from .data import Task, converter
from .dataset import count_tasks, iter_tasks
from .errors import GymError
from .metrics import RunStats
from .plugins import Plugins
from .runners import EmbeddedRunner, RolloutRunner

DEFAULT_PARALLEL = 16


@attrs.define
class CollectConfig:
    """Everything one ``gym collect`` run needs; mirrors the CLI options."""

    agent: str
    output: Path
    model: str
    input: Path | None = None
    limit: int | None = None
    num_repeats: int = 1
    parallel: int = DEFAULT_PARALLEL
    agent_config: AgentConfig = attrs.field(factory=AgentConfig)
    progress: bool = True
    servers: list[str] = attrs.field(factory=list)  # `gym serve` URLs; empty: run in-process
    token: str | None = None  # bearer token of those servers


def metrics_path(output: Path) -> Path:
    """``results/run.jsonl`` -> ``results/run.metrics.json``."""
    return output.with_name(output.stem + ".metrics.json")


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class _Progress:
    """A tqdm bar with rollouts/s and the running mean reward; silent when disabled."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="rollout", file=sys.stderr,
                            mininterval=0.25, dynamic_ncols=True)
        self._last_postfix = 0.0

    def update(self, stats: RunStats) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.monotonic()
        if now - self._last_postfix > 0.5:
            self._last_postfix = now
            mean = stats.mean_reward
            self.bar.set_postfix_str(
                f"reward={mean:.3f} failed={sum(stats.failures.values())}" if mean is not None
                else f"failed={sum(stats.failures.values())}", refresh=False)

    def close(self, stats: RunStats) -> None:
        if self.bar is not None:
            self._last_postfix = 0.0
            self.bar.n -= 1
            self.update(stats)  # final figures on the bar
            self.bar.close()


async def make_runner(plugins: Plugins, config: CollectConfig) -> RolloutRunner:
    """The one place that decides where rollouts run."""
    if config.servers:
        from .remote import ServedRunner

        return await ServedRunner.create(config.servers, config.agent, config.agent_config, token=config.token,
                                         model=config.model or None, need_dataset=config.input is None)
    return await EmbeddedRunner.create(plugins, config.agent, config.model, config.agent_config)


def resolve_input(config: CollectConfig, runner: RolloutRunner) -> Path:
    if config.input is not None:
        return config.input
    path = runner.example_dataset_path
    if path is None:
        raise GymError(f"agent {config.agent!r} bundles no example dataset; pass --input FILE.jsonl")
    return path


def _jobs(path: Path, limit: int | None, repeats: int) -> Iterator[tuple[int, int, Task]]:
    for task_index, (_line, task) in enumerate(iter_tasks(path, limit)):
        for rollout_index in range(repeats):
            yield task_index, rollout_index, task


async def collect(plugins: Plugins, config: CollectConfig) -> dict[str, Any]:
    """Run a whole collection; return the summary (also written to ``*.metrics.json``)."""
    runner = await make_runner(plugins, config)
    try:
        input_path = resolve_input(config, runner)
        n_tasks = count_tasks(input_path, config.limit)  # validates every row before any work
    except BaseException:
        await runner.aclose()
        raise
    total = n_tasks * config.num_repeats
    stats = RunStats(repeats=config.num_repeats)
    started = time.perf_counter()
    config.output.parent.mkdir(parents=True, exist_ok=True)
    progress = _Progress(total, config.progress, "Collecting rollouts")
    jobs = _jobs(input_path, config.limit, config.num_repeats)
    parallel = config.parallel if config.parallel > 0 else max(total, 1)
    try:
        with open(config.output, "wb") as fp:
            writer = jsonlines.Writer(fp, dumps=_dumps, flush=True)

            async def worker() -> None:
                for task_index, rollout_index, task in jobs:
                    rollout = await runner.run(task, task_index, rollout_index)
                    writer.write(converter.unstructure(rollout))
                    stats.add(rollout)
                    progress.update(stats)
                    del rollout  # nothing of a written rollout outlives it

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(parallel, max(total, 1))):
                        group.create_task(worker())
            except BaseExceptionGroup as group_error:  # surface the first real cause
                raise group_error.exceptions[0] from None
    finally:
        progress.close(stats)
        await runner.aclose()
    summary = stats.summary(
        time.perf_counter() - started,
        agent=runner.agent,
        model=runner.model_label,
        **({"note": "REPLAY: model turns were replayed from a recording; no model was called"}
           if runner.is_replay else {}),
        input=str(input_path),
        output=str(config.output),
        num_repeats=config.num_repeats,
    )
    metrics_path(config.output).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary
