"""Batch collection: tasks in, one scored rollout per output line, written as each finishes.

:class:`Collector` is the engine: jobs in, finished rollouts out, at most ``parallel`` in
flight (or as many as the model takes, ``parallel="auto"``), in the caller's process. It is
the Python API (``gymcore.Collector``) and what ``gym collect`` runs on: :func:`collect`
adds the input file, the output files, ``--resume``, the progress bar, signals and the
summary, and nothing else, so both give the same records.

The input is validated as a whole before the first rollout starts (streaming, so a large
file costs no memory), then streamed again while at most ``parallel`` rollouts are in
flight. Each finished rollout is one ``write`` of one line: a crash loses only what was
still running, and ``--resume`` picks up from there (see :mod:`gymcore.runfiles`).

Rollouts that fail for infrastructure reasons (the model endpoint after retries, a rollout
``timeout``, a plugin exception in a session hook or ``verify``) go to the failures sidecar,
never to the output: an infrastructure failure is not a reward of 0.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs

from .agent import AgentConfig
from .concurrency import AdaptiveLimit
from .data import Rollout, Task, Timing
from .dataset import InputScan, iter_rows, scan_input, validate_row
from .eager_requests import requests_sent_at_once
from .errors import GymError, InputError
from .gc_tuning import wide_young_generation
from .hook_threads import stuck_summary
from .input_spool import run_input
from .limits import check_ports, destinations, ensure_open_files
from .metrics import PASS_THRESHOLD, RunStats
from .plugins import Plugins
from .reach import ModelReach
from .runfiles import (JsonlAppender, ResumeState, RolloutSink, RunRecord, failures_path, file_sha256,
                       metrics_path, refuse_to_overwrite, refuse_to_write_over_input, resume, run_record_path,
                       warn, write_json_atomic)
from .runlock import RunLock
from .runners import RolloutRunner
from .stopping import DEFAULT_GRACE, RunControl

__all__ = ["Collector", "RolloutGroup", "RunStopped", "CollectConfig", "collect", "metrics_path", "failures_path",
           "DEFAULT_PARALLEL", "DEFAULT_PARALLEL_MAX", "AUTO"]

DEFAULT_PARALLEL = 16
#: ``--parallel auto``: the number of rollouts in flight follows the model's answers
AUTO = "auto"
#: the most rollouts in flight ``--parallel auto`` goes to (``--parallel-max``)
DEFAULT_PARALLEL_MAX = 256
#: one rollout to run: ``(task_index, rollout_index, task)``
Job = tuple[int, int, Task]


@attrs.define
class CollectConfig:
    """Everything one ``gym collect`` run needs; mirrors the CLI options."""

    agent: str  # the environment of rows without an ``agent_ref``; "": every row names its own
    output: Path
    model: str
    input: Path | None = None
    limit: int | None = None
    num_repeats: int = 1
    parallel: int | str = DEFAULT_PARALLEL  # or AUTO
    parallel_max: int = DEFAULT_PARALLEL_MAX
    agent_config: AgentConfig = attrs.field(factory=AgentConfig)
    progress: bool = True
    #: continue the run in ``output`` (skip what is done, retry what failed)
    resume: bool = False
    #: replace an existing ``output`` and its sidecars
    overwrite: bool = False
    #: go on without invalid input rows instead of refusing to start
    skip_invalid: bool = False
    #: stop early when more rollouts fail than this: a count (>= 1, or 0 for "none"), or a
    #: fraction (0 < f < 1) of the rollouts this invocation runs; ``None``: never
    max_failures: float | None = None
    #: seconds one rollout may take as a whole (model, tools, verify); ``None``: no bound
    timeout: float | None = None
    #: seconds in-flight rollouts get to finish after the first interrupt
    grace: float = DEFAULT_GRACE
    #: catch SIGINT/SIGTERM (the CLI does; a library caller keeps its own handlers)
    handle_signals: bool = False
    servers: list[str] = attrs.field(factory=list)  # `gym serve` URLs; empty: run in-process
    model_urls: list[str] = attrs.field(factory=list)  # --model-url: the model's replicas (for limits)
    token: str | None = None  # bearer token of those servers
    ray: Any = None  # a ray_runners.RayOptions: runners started as Ray actors (--executor ray)
    server_timeout: float | None = None  # seconds a rollout request to them may take; None: the default
    #: a rollout passes (pass@k, the task flags) when its reward is at least this
    pass_threshold: float = PASS_THRESHOLD
    #: write NeMo Gym's materialized-inputs and aggregate-metrics files beside the output
    nemo_gym_files: bool = True
    #: run only a pilot of this many rollouts, spread over the tasks, and project the whole run
    estimate: int | None = None
    price_in: float | None = None  # per million input tokens, for the projection's cost
    price_out: float | None = None  # per million output tokens


class InvalidInputError(GymError):
    """Invalid input rows, all reported (up to a cap) before any rollout starts."""

    def __init__(self, scan: InputScan):
        self.scan = scan
        hint = "pass --skip-invalid to go on without invalid rows"
        if scan.invalid == 1:
            message = f"{scan.errors[0]} ({hint})"
        else:
            message = (f"{scan.invalid} invalid rows in {scan.path} (fix them, or {hint}):\n"
                       + "\n".join("  " + line for line in scan.report().splitlines()))
        super().__init__(message)


class _Progress:
    """A tqdm bar with rollouts/s and the running mean reward; silent when disabled."""

    def __init__(self, total: int, enabled: bool, label: str, adaptive: AdaptiveLimit | None = None):
        self.bar = None
        self.adaptive = adaptive  # --parallel auto: its current limit is shown
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
            text = (f"reward={mean:.3f} failed={sum(stats.failures.values())}" if mean is not None
                    else f"failed={sum(stats.failures.values())}")
            if self.adaptive is not None:
                text += f" parallel={self.adaptive.limit}"
            self.bar.set_postfix_str(text, refresh=False)

    def note(self, message: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self, stats: RunStats) -> None:
        if self.bar is not None:
            self._last_postfix = 0.0
            self.bar.n -= 1
            self.update(stats)  # final figures on the bar
            self.bar.close()


def resolve_input(config: CollectConfig, runner: RolloutRunner) -> Path:
    if config.input is not None:
        return config.input
    path = runner.example_dataset_path
    if path is None:
        if not config.agent:
            raise GymError("no --agent and no --input: give the input JSONL (its rows' agent_ref name their "
                           "environments), or an --agent whose example dataset to run")
        raise GymError(f"agent {config.agent!r} bundles no example dataset; pass --input FILE.jsonl")
    return path


#: Workers are started this many at a time, one loop turn apart. Started all at once, a
#: --parallel 1024 run would prepare 1,024 first requests before sending any of them.
START_BATCH = 16


def failure_limit(max_failures: float | None, total: int) -> int | None:
    """The number of failures the run tolerates: ``None`` for no limit."""
    if max_failures is None:
        return None
    if 0 < max_failures < 1:
        return math.floor(max_failures * total + 1e-9)  # 0.29 * 100 is 28.999...
    return int(max_failures)


def _jobs(path: Path, limit: int | None, repeats: int, state: ResumeState) -> Iterator[Job]:
    for task_index, _line, task in iter_rows(path, limit):
        if isinstance(task, InputError):  # reported before the run; only here with --skip-invalid
            continue
        done = state.done.get(task_index, 0)
        for rollout_index in range(repeats):
            if not done >> rollout_index & 1:
                yield task_index, rollout_index, task


def _pilot_jobs(path: Path, limit: int | None, repeats: int, ranks: list[set[int]]) -> Iterator[Job]:
    """The jobs of an ``--estimate`` pilot: the tasks :func:`gymcore.estimate.pilot_ranks` chose."""
    rank = 0
    for task_index, _line, task in iter_rows(path, limit):
        if isinstance(task, InputError):
            continue
        for rollout_index in range(repeats):
            if rank in ranks[rollout_index]:
                yield task_index, rollout_index, task
        rank += 1


def _prepare(config: CollectConfig, runner: RolloutRunner, stats: RunStats,
             by_environment: Any = None) -> tuple[Path, str, InputScan, RunRecord, ResumeState]:
    """Validate the input, identify the run, and (resuming) check and scan what is done."""
    input_path = resolve_input(config, runner)
    refuse_to_write_over_input(config.output, Path(input_path))
    given = None if config.input is None else run_input(config.input, config.output, resume=config.resume,
                                                        overwrite=config.overwrite, progress=config.progress)
    if given is not None:  # a stream was copied beside the output: the run reads the copy
        input_path = given.path
    scan = scan_input(input_path, config.limit)  # validates every row before any work
    if scan.invalid and not config.skip_invalid:
        raise InvalidInputError(scan)
    if scan.invalid:
        first = scan.errors[0]
        print(f"gym: skipping {scan.invalid} invalid rows of {input_path} (--skip-invalid); first: {first}",
              file=sys.stderr, flush=True)
    dropped = scan.dropped_warning()
    if dropped:
        warn(dropped)
    # named as the user knows it: their file, or where the agent's example dataset came from
    # (a runner's URL, not the temporary copy fetched from it)
    input_name = given.name if given is not None else runner.example_dataset_name or str(input_path)
    record = RunRecord(
        input=input_name, input_sha256=file_sha256(Path(input_path)), agent=runner.agent,
        model=runner.model_label, overrides=dict(config.agent_config.overrides),
        max_steps=config.agent_config.max_steps, num_repeats=config.num_repeats, limit=config.limit,
        judge_model=runner.judge_model, return_tokens=runner.return_tokens,
        input_copy=given.copy if given is not None else None, seed_repeats=config.agent_config.seed_repeats,
        pass_threshold=config.pass_threshold)
    state = ResumeState()
    if config.resume:
        def seen(line: dict[str, Any]) -> None:
            stats.add_line(line)
            if by_environment is not None:
                by_environment.add_line(line)

        state = resume(config.output, record, seen)
        record.invocations = state.invocation
    return Path(input_path), input_name, scan, record, state


@attrs.define
class RolloutGroup:
    """All repeats of one task, as ``Collector.run(..., groups=True)`` yields them: ordered by
    ``rollout_index``; a failed one is in it with ``error`` set and ``reward`` ``None``."""

    task_index: int
    rollouts: list[Rollout]

    @property
    def task(self) -> Task:
        return self.rollouts[0].task

    @property
    def scored(self) -> list[Rollout]:
        return [r for r in self.rollouts if r.error is None]

    @property
    def failed(self) -> list[Rollout]:
        return [r for r in self.rollouts if r.error is not None]


class RunStopped(GymError):
    """``Collector.run`` ended early: rejected credentials, a model never reached, or more
    failures than ``max_failures``. What finished before was yielded."""


#: The end of a run's results, on the queue between workers and the reader.
_END = object()


class Collector:
    """Rollouts in, scored rollouts out, in this process: the engine ``gym collect`` runs on.

    ::

        async with gymcore.Collector(agent="weather", model="openai-chat:Qwen/Qwen3-8B",
                                     parallel=256) as collector:
            async for group in collector.run(rows, num_repeats=8, groups=True):
                ...

    ``rows`` (dicts, or :class:`~gymcore.data.Task`) are pulled only when a rollout slot is
    free, so a trainer can feed prompts as it goes. Each result is the record the output
    file holds: a :class:`~gymcore.data.Rollout` with ``task_index`` (the row's position)
    and ``rollout_index`` (the repeat); a failure has ``error`` set and ``reward`` ``None``,
    never a reward of 0. Retries, ``timeout``, ``max_failures``, failure classes and served
    runners (``servers=[...]``) behave as in ``gym collect``; the output file, ``--resume``,
    the run record, the progress bar and signals are what the CLI adds.
    """

    def __init__(self, agent: str, model: str = "", *, parallel: int | str = DEFAULT_PARALLEL,
                 parallel_max: int = DEFAULT_PARALLEL_MAX, max_steps: int | None = None,
                 overrides: dict[str, Any] | None = None, max_retries: int | None = None,
                 model_timeout: float | None = None, judge_model: str | None = None,
                 timeout: float | None = None, max_failures: float | None = None,
                 grace: float = DEFAULT_GRACE, servers: list[str] | tuple[str, ...] = (),
                 token: str | None = None, plugins: Plugins | None = None,
                 agent_config: AgentConfig | None = None, server_timeout: float | None = None, ray: Any = None):
        if agent_config is None:
            from .agent import DEFAULT_MAX_STEPS
            from .backends import DEFAULT_MODEL_TIMEOUT
            from .retry import DEFAULT_MAX_RETRIES, RetryPolicy

            agent_config = AgentConfig(
                max_steps=max_steps or DEFAULT_MAX_STEPS, overrides=dict(overrides or {}),
                retry=RetryPolicy(max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries),
                model_timeout=model_timeout or DEFAULT_MODEL_TIMEOUT, judge_model=judge_model)
        if parallel != AUTO and (not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 0):
            raise GymError(f"parallel must be a whole number >= 0 or {AUTO!r}, got {parallel!r}")
        if parallel == AUTO and servers:
            raise GymError("--parallel auto learns from the model's answers, which the --server runners see, "
                           "not this process: give a number")
        self.agent, self.model = agent, model
        self.parallel, self.parallel_max = parallel, parallel_max
        self.agent_config = agent_config
        self.timeout, self.max_failures, self.grace = timeout, max_failures, grace
        self.servers, self.token = list(servers), token
        self.server_timeout, self.ray = server_timeout, ray  # served runners' request bound; --executor ray
        self._plugins = plugins
        #: the CLI's --input (read by make_runner: without it a served runner's example dataset is fetched);
        #: the API's rows come from the caller
        self.input: Path | None = Path("<rows>")
        self.runner: RolloutRunner | None = None
        self.adaptive: AdaptiveLimit | None = None  # the limit of a --parallel auto run
        self._model_version: Any = None
        self._eager: Any = None
        self._runs: set[asyncio.Task] = set()
        #: how the last run ended: ``completed``, ``stopped`` or ``interrupted``
        self.status: str | None = None
        self.stop_reason: str | None = None

    @classmethod
    def from_config(cls, config: CollectConfig, plugins: Plugins | None = None) -> "Collector":
        collector = cls(config.agent, config.model, parallel=config.parallel, parallel_max=config.parallel_max,
                        agent_config=config.agent_config, timeout=config.timeout, max_failures=config.max_failures,
                        grace=config.grace, servers=config.servers, token=config.token, plugins=plugins,
                        server_timeout=config.server_timeout, ray=config.ray)
        collector.input = config.input
        return collector

    async def __aenter__(self) -> "Collector":
        if self._plugins is None:
            from .plugins import load_plugins

            self._plugins = load_plugins()
        self._eager = requests_sent_at_once()  # Python 3.11: requests made together leave together
        self._eager.__enter__()
        try:
            self.runner = await make_runner(self._plugins, self)
        except BaseException:
            self._eager.__exit__(None, None, None)
            raise
        if self.parallel == AUTO:
            self.adaptive = AdaptiveLimit(self.parallel_max)
            self.runner.wrap_models(self.adaptive.watch)  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            for task in list(self._runs):  # a run whose reader walked away without closing it
                task.cancel()
            if self._runs:
                await asyncio.gather(*self._runs, return_exceptions=True)
            if self.runner is not None:
                await self.runner.aclose()
        finally:
            self._eager.__exit__(None, None, None)

    def set_model_version(self, version: Any) -> None:
        """Stamp ``model_version`` on every rollout that starts from now on (an int or a
        string; ``None`` stops stamping)."""
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise GymError(f"model_version must be an int or a string, got {type(version).__name__}")
        self._model_version = version

    @property
    def model_version(self) -> Any:
        return self._model_version

    def run(self, rows: Iterable[Any] | AsyncIterable[Any], num_repeats: int = 1,
            groups: bool = False) -> AsyncIterator[Any]:
        """Run ``num_repeats`` rollouts of every row; yield each :class:`Rollout` as it
        finishes (``groups=True``: each task's :class:`RolloutGroup` when its last repeat
        finishes). Raises :class:`RunStopped` after the last result of a run that stopped
        early, and :class:`~gymcore.errors.InputError` for a row that is not a task."""
        if not isinstance(num_repeats, int) or isinstance(num_repeats, bool) or num_repeats < 1:
            raise GymError(f"num_repeats must be a whole number >= 1, got {num_repeats!r}")
        total = len(rows) * num_repeats if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
        if self.max_failures is not None and 0 < self.max_failures < 1 and total is None:
            raise GymError("max_failures as a fraction needs rows with a length (a list); give a count")
        jobs = _row_jobs(rows, num_repeats)
        stream = self.stream(jobs, total=total, repeats=num_repeats if groups else None)
        return self._raising(stream)

    async def _raising(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async with aclosing(stream):
            async for item in stream:
                yield item
        if self.status == "stopped":
            raise RunStopped(self.stop_reason or "the run stopped early")

    async def stream(self, jobs: Iterator[Job] | AsyncIterator[Job], *, total: int | None = None,
                     repeats: int | None = None, control: RunControl | None = None,
                     check: Callable[[Rollout], None] | None = None) -> AsyncIterator[Any]:
        """The one path of every run: ``(task_index, rollout_index, task)`` jobs in, finished
        rollouts out (``repeats`` given: grouped by task). ``check`` sees each rollout in the
        worker before it counts (the CLI writes it there: one that cannot be written becomes
        a failure and counts as one). ``control`` is the run's stop flag (the CLI's catches
        signals); ``total`` sizes a ``max_failures`` fraction."""
        if self.runner is None:
            raise GymError("use the Collector in `async with gymcore.Collector(...) as collector:`")
        own_control = control is None
        control = control or RunControl(self.grace, notify=_note)
        queue: asyncio.Queue = asyncio.Queue()
        drive = asyncio.create_task(self._drive(jobs, total, control, check, queue.put_nowait))
        self._runs.add(drive)
        drive.add_done_callback(lambda task: (self._runs.discard(task), queue.put_nowait(_END)))
        open_groups: dict[int, list[Rollout]] = {}
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if repeats is None:
                    yield item
                    del item  # not alive while the next one is awaited
                    continue
                members = open_groups.setdefault(item.task_index, [])
                members.append(item)
                if len(members) >= repeats:
                    del open_groups[item.task_index]
                    members.sort(key=lambda r: r.rollout_index)
                    yield RolloutGroup(item.task_index, members)
            drive.result()  # a worker's exception (a bad row, a bug) surfaces here
        finally:
            if not drive.done():  # the reader stopped early: so does the run
                control.stop("the caller stopped reading results", status="interrupted", at_once=True)
                drive.cancel()
                await asyncio.gather(drive, return_exceptions=True)
            if own_control:
                control.remove_signal_handlers()  # none installed; cancels a pending grace timer
            self.status, self.stop_reason = control.status, control.reason

    async def _drive(self, jobs: Iterator[Job] | AsyncIterator[Job], total: int | None, control: RunControl,
                     check: Callable[[Rollout], None] | None, emit: Callable[[Rollout], None]) -> None:
        runner = self.runner
        assert runner is not None
        timeout = self.timeout
        tolerated = failure_limit(self.max_failures, total or 0)  # a fraction needs total (run() checks)
        in_flight = 0
        failed = 0
        control.in_flight = lambda: in_flight
        # an embedded runner watches its backend's calls; otherwise judge from finished rollouts
        reach: ModelReach = getattr(runner, "reach", None) or ModelReach()
        adaptive = self.adaptive
        if isinstance(jobs, AsyncIterator):
            pulling = asyncio.Lock()  # an async generator cannot be advanced by two workers at once

            async def next_job() -> Job | None:
                async with pulling:
                    if control.stopping:
                        return None
                    return await anext(jobs, None)  # type: ignore[arg-type]
        else:
            async def next_job() -> Job | None:
                return next(jobs, None)  # type: ignore[arg-type]

        async def run_one(task_index: int, rollout_index: int, task: Task) -> Rollout:
            version = self._model_version
            if timeout is None:
                rollout = await runner.run(task, task_index, rollout_index)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        rollout = await runner.run(task, task_index, rollout_index)
                except TimeoutError:
                    rollout = Rollout(task=task, task_index=task_index, rollout_index=rollout_index,
                                      agent=runner.environment_for(task) if hasattr(runner, "environment_for")
                                      else runner.agent, model=runner.model_label, timing=Timing(total_s=timeout),
                                      error={"type": "timeout", "kind": None, "status": None, "attempts": 1,
                                             "message": f"the rollout took longer than --timeout {timeout:g}s"})
            if version is not None:
                rollout.model_version = version
            return rollout

        async def worker() -> None:
            nonlocal in_flight, failed
            while not control.stopping:
                if adaptive is not None:
                    await adaptive.acquire()
                try:
                    job = await next_job()
                    if job is None or control.stopping:
                        return
                    in_flight += 1
                    try:
                        rollout = await run_one(*job)
                    finally:
                        in_flight -= 1
                finally:
                    if adaptive is not None:
                        adaptive.release()
                if check is not None:
                    check(rollout)  # the CLI writes it: one that cannot be written becomes a failure
                error = rollout.error
                unreachable = reach.stop_reason(rollout)
                emit(rollout)
                del rollout  # nothing of a finished rollout outlives it here
                if error is not None:
                    failed += 1
                    if error.get("kind") == "auth":
                        control.stop(f"the model endpoint refused the credentials (check the API key): "
                                     f"{error.get('message')}", at_once=True)
                    elif unreachable:  # every other call would fail the same way
                        control.stop(unreachable, at_once=True)
                    elif tolerated is not None and failed > tolerated:
                        control.stop(f"{failed} rollouts failed, more than --max-failures "
                                     f"{self.max_failures:g} allows ({tolerated})")

        if self.parallel == AUTO:
            workers = self.parallel_max
        else:
            workers = self.parallel if self.parallel > 0 else max(total or 1, 1)
        if total is not None:
            workers = min(workers, max(total, 1))
        elif self.parallel == 0:
            raise GymError("parallel 0 (all at once) needs rows with a length (a list)")
        warning = ensure_open_files(workers)
        if warning:
            control.notify(warning)
        try:
            async with asyncio.TaskGroup() as group:
                for started_workers in range(workers):
                    if started_workers and started_workers % START_BATCH == 0:
                        await asyncio.sleep(0)  # let the loop send what is ready before starting more
                    if control.stopping:
                        break
                    control.tasks.append(group.create_task(worker()))
        except BaseExceptionGroup as group_error:  # surface the first real cause
            raise group_error.exceptions[0] from None


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _row_jobs(rows: Iterable[Any] | AsyncIterable[Any], repeats: int) -> AsyncIterator[Job]:
    """Each row as ``repeats`` jobs, a row pulled only when its first job is wanted."""
    index = 0
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            task = _as_task(row, index)
            for rollout_index in range(repeats):
                yield index, rollout_index, task
            index += 1
    else:
        for row in rows:
            task = _as_task(row, index)
            for rollout_index in range(repeats):
                yield index, rollout_index, task
            index += 1


def _as_task(row: Any, index: int) -> Task:
    if isinstance(row, Task):
        return row
    return validate_row(row, "rows", index)  # InputError: "rows:<index>: field ...: ..."


async def make_runner(plugins: Plugins, config: CollectConfig | Collector) -> RolloutRunner:
    """The one place that decides where rollouts run: per row's environment (``agent_ref``,
    else ``--agent``), in this process, on ``gym serve`` runners, or on runners Ray starts
    (:mod:`gymcore.routing`)."""
    from .routing import embedded_routing_runner, ray_routing_runner, served_routing_runner

    if config.ray is not None:
        return await ray_routing_runner(config)
    if config.servers:
        return await served_routing_runner(config)
    return await embedded_routing_runner(plugins, config)


async def collect(plugins: Plugins, config: CollectConfig) -> dict[str, Any]:
    """Run (or resume) a whole collection; return the summary (also written to
    ``*.metrics.json``). ``summary["status"]`` says how it ended: ``completed``,
    ``stopped`` (too many failures, an auth failure, a model never reached) or ``interrupted`` (a signal)."""
    output = config.output
    if config.resume and config.overwrite:
        raise GymError("--resume and --overwrite contradict each other: pick one")
    with RunLock(output):  # one run per output, to the end; a second one refuses before touching a file
        if not config.resume and not config.overwrite:
            refuse_to_overwrite(output)
        async with Collector.from_config(config, plugins) as collector:
            with wide_young_generation():  # thousands of rollouts in flight: see gc_tuning
                return await _collect(collector, config)


async def _collect(collector: Collector, config: CollectConfig) -> dict[str, Any]:
    """What the CLI adds to a run: the input file, resume, the run record, the output and
    failures files, the progress bar, signals and the summary."""
    runner = collector.runner
    assert runner is not None
    from .routing import EnvironmentStats

    output = config.output
    stats = RunStats(repeats=config.num_repeats, threshold=config.pass_threshold)
    by_environment = EnvironmentStats(config.num_repeats, config.pass_threshold)
    input_path, input_name, scan, record, state = _prepare(config, runner, stats, by_environment)
    prepare = getattr(runner, "prepare", None)
    if prepare is not None:  # every environment the rows name: available, and built once
        await prepare(scan)
        record.environments = sorted(runner.runners)
    total = scan.valid * config.num_repeats - state.count_done(scan.rows, config.num_repeats)
    whole_run, pilot = total, None
    if config.estimate:  # only a pilot now: the first rollouts of the run, spread over the tasks
        from .estimate import PilotSamples, pilot_ranks

        pilot = PilotSamples()
        total = min(config.estimate, total)
        jobs = _pilot_jobs(input_path, config.limit, config.num_repeats,
                           pilot_ranks(total, scan.valid, config.num_repeats))
    else:
        jobs = _jobs(input_path, config.limit, config.num_repeats, state)
    # Everything is checked: from here on files are written.
    output.parent.mkdir(parents=True, exist_ok=True)
    record.save(run_record_path(output))
    failures_file = failures_path(output)
    if not config.resume:
        failures_file.unlink(missing_ok=True)
    if config.nemo_gym_files:
        _write_materialized_inputs(config, runner, input_path)
    writer = JsonlAppender(output, "ab" if config.resume else "wb").open()
    failures = JsonlAppender(failures_file, "ab")
    progress = _Progress(total, config.progress, "Resuming rollouts" if state.lines else "Collecting rollouts",
                         adaptive=collector.adaptive)
    if config.resume and (state.lines or state.failed_before):
        progress.note(f"gym: resuming {output}: {state.lines} rollouts done, {state.failed_before} failed "
                      f"before (retried now), {total} to run")
    sink = RolloutSink(writer, failures, state.invocation,
                       on_warning=lambda text: progress.note(f"gym: warning: {text}"))
    control = RunControl(config.grace, notify=progress.note)
    started = time.perf_counter()
    # the engine checks open files as it starts; ports to one host:port are the CLI's to name
    parallel = collector.parallel_max if collector.parallel == AUTO else \
        (collector.parallel if collector.parallel > 0 else max(total, 1))
    # where this process's connections go: the runners, else the model's replicas
    targets = (config.ray.workers or 1) if config.ray is not None else destinations(config.servers or config.model_urls)
    warning = check_ports(min(parallel, total), targets)
    if warning:
        progress.note(warning)
    if config.handle_signals:
        control.install_signal_handlers()
    try:
        if total:
            stream = collector.stream(jobs, total=total, control=control, check=sink.write)
            async with aclosing(stream):
                async for rollout in stream:
                    stats.add(rollout)
                    by_environment.add(rollout)
                    if pilot is not None:
                        pilot.add(rollout)
                    progress.update(stats)
                    del rollout  # nothing of a written rollout outlives it
    finally:
        control.remove_signal_handlers()
        writer.close()
        failures.close()
        progress.close(stats)
    adaptive = collector.adaptive
    status = control.status
    projection = None
    if pilot is not None and status == "completed":
        from .estimate import project

        status = "estimated"  # a pilot: --resume runs the rest
        projection = project(pilot, whole_run, adaptive.limit if adaptive is not None else
                             int(collector.parallel), config.price_in, config.price_out) if len(pilot) else None
    summary = stats.summary(
        time.perf_counter() - started,
        status=status,
        **({"stop_reason": control.reason} if control.reason else {}),
        agent=runner.agent,
        model=runner.model_label,
        **({"note": "REPLAY: model turns were replayed from a recording; no model was called"}
           if runner.is_replay else {}),
        input=input_name if config.input is None else str(input_path),
        output=str(output),
        **({"failures_file": str(failures_file)} if failures.lines else {}),
        num_repeats=config.num_repeats,
        invocation=state.invocation,
        skipped_invalid_rows=scan.invalid,
        **({"parallel_auto": {"final": adaptive.limit, "settled": round(adaptive.settled(), 1),
                              "peak": adaptive.peak, "cuts": adaptive.cuts}} if adaptive is not None else {}),
        **({"estimate": projection} if projection is not None else {}),
        **stuck_summary(getattr(runner, "stuck_hook_calls", dict)()),  # a served runner keeps its own
        **by_environment.summary(),
    )
    if config.nemo_gym_files and output.exists():
        from .nemo_gym import write_aggregate_metrics
        from .runfiles import read_complete_lines

        summary["nemo_gym_aggregate_metrics"] = str(write_aggregate_metrics(
            output, (line for _n, line in read_complete_lines(output, repair=False, on_warning=lambda _t: None)),
            config.pass_threshold))
    write_json_atomic(metrics_path(output), summary)
    return summary


def _write_materialized_inputs(config: CollectConfig, runner: RolloutRunner, input_path: Path) -> None:
    """NeMo Gym's materialized-inputs file: every valid row, once per repeat, as it is sent."""
    from .nemo_gym import write_materialized_inputs
    from .routing import row_environment

    default = runner.agent or None
    rows = ((task_index, task, row_environment(task, default) or "")
            for task_index, _line, task in iter_rows(input_path, config.limit) if not isinstance(task, InputError))
    write_materialized_inputs(config.output, rows, config.num_repeats, config.agent_config.overrides,
                              config.agent_config.seed_repeats)
