"""Batch collection: tasks in, one scored rollout per output line, written as each finishes.

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
from pathlib import Path
from typing import Any, Iterator

import attrs

from .agent import AgentConfig
from .data import Rollout, Task, Timing
from .dataset import InputScan, iter_rows, scan_input
from .eager_requests import requests_sent_at_once
from .input_spool import run_input
from .errors import GymError, InputError
from .gc_tuning import wide_young_generation
from .hook_threads import MAX_THREADS, stuck_summary
from .limits import check_ports, destinations, ensure_open_files
from .metrics import RunStats
from .plugins import Plugins
from .reach import ModelReach
from .runfiles import (JsonlAppender, ResumeState, RolloutSink, RunRecord, failures_path, file_sha256,
                       metrics_path, refuse_to_overwrite, refuse_to_write_over_input, resume, run_record_path,
                       warn, write_json_atomic)
from .runlock import RunLock
from .runners import EmbeddedRunner, RolloutRunner
from .stopping import DEFAULT_GRACE, RunControl

__all__ = ["CollectConfig", "collect", "metrics_path", "failures_path", "DEFAULT_PARALLEL"]

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


async def make_runner(plugins: Plugins, config: CollectConfig) -> RolloutRunner:
    """The one place that decides where rollouts run."""
    if config.ray is not None:
        from .ray_runners import RayRunner

        return await RayRunner.create(config.ray, config.agent, config.model, config.agent_config,
                                      need_dataset=config.input is None)
    if config.servers:
        from .remote import ServedRunner

        return await ServedRunner.create(config.servers, config.agent, config.agent_config, token=config.token,
                                         model=config.model or None, need_dataset=config.input is None)
    return await EmbeddedRunner.create(plugins, config.agent, config.model, config.agent_config,
                                       hook_threads=config.parallel or MAX_THREADS)


def resolve_input(config: CollectConfig, runner: RolloutRunner) -> Path:
    if config.input is not None:
        return config.input
    path = runner.example_dataset_path
    if path is None:
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


def _jobs(path: Path, limit: int | None, repeats: int, state: ResumeState) -> Iterator[tuple[int, int, Task]]:
    for task_index, _line, task in iter_rows(path, limit):
        if isinstance(task, InputError):  # reported before the run; only here with --skip-invalid
            continue
        done = state.done.get(task_index, 0)
        for rollout_index in range(repeats):
            if not done >> rollout_index & 1:
                yield task_index, rollout_index, task


def _prepare(config: CollectConfig, runner: RolloutRunner,
             stats: RunStats) -> tuple[Path, str, InputScan, RunRecord, ResumeState]:
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
        judge_model=config.agent_config.judge_model, return_tokens=config.agent_config.return_tokens,
        input_copy=given.copy if given is not None else None)
    state = ResumeState()
    if config.resume:
        state = resume(config.output, record, stats.add_line)
        record.invocations = state.invocation
    return Path(input_path), input_name, scan, record, state


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
        with requests_sent_at_once():  # Python 3.11: requests made together would leave together
            runner = await make_runner(plugins, config)
            try:
                with wide_young_generation():  # thousands of rollouts in flight: see gc_tuning
                    return await _collect(runner, config)
            finally:
                await runner.aclose()


async def _collect(runner: RolloutRunner, config: CollectConfig) -> dict[str, Any]:
    output = config.output
    stats = RunStats(repeats=config.num_repeats)
    input_path, input_name, scan, record, state = _prepare(config, runner, stats)
    total = scan.valid * config.num_repeats - state.count_done(scan.rows, config.num_repeats)
    tolerated = failure_limit(config.max_failures, total)
    # Everything is checked: from here on files are written.
    output.parent.mkdir(parents=True, exist_ok=True)
    record.save(run_record_path(output))
    failures_file = failures_path(output)
    if not config.resume:
        failures_file.unlink(missing_ok=True)
    writer = JsonlAppender(output, "ab" if config.resume else "wb").open()
    failures = JsonlAppender(failures_file, "ab")
    progress = _Progress(total, config.progress, "Resuming rollouts" if state.lines else "Collecting rollouts")
    if config.resume and (state.lines or state.failed_before):
        progress.note(f"gym: resuming {output}: {state.lines} rollouts done, {state.failed_before} failed "
                      f"before (retried now), {total} to run")
    sink = RolloutSink(writer, failures, state.invocation,
                       on_warning=lambda text: progress.note(f"gym: warning: {text}"))
    control = RunControl(config.grace, notify=progress.note)
    jobs = _jobs(input_path, config.limit, config.num_repeats, state)
    timeout = config.timeout
    in_flight = 0
    control.in_flight = lambda: in_flight
    # an embedded runner watches its backend's calls; otherwise judge from finished rollouts
    reach: ModelReach = getattr(runner, "reach", None) or ModelReach()

    async def run_one(task_index: int, rollout_index: int, task: Task) -> Rollout:
        if timeout is None:
            return await runner.run(task, task_index, rollout_index)
        try:
            async with asyncio.timeout(timeout):
                return await runner.run(task, task_index, rollout_index)
        except TimeoutError:
            return Rollout(task=task, task_index=task_index, rollout_index=rollout_index, agent=runner.agent,
                           model=runner.model_label, timing=Timing(total_s=timeout),
                           error={"type": "timeout", "kind": None, "status": None, "attempts": 1,
                                  "message": f"the rollout took longer than --timeout {timeout:g}s"})

    async def worker() -> None:
        nonlocal in_flight
        while not control.stopping:
            job = next(jobs, None)
            if job is None:
                return
            in_flight += 1
            try:
                rollout = await run_one(*job)
            finally:
                in_flight -= 1
            sink.write(rollout)  # may make it a failure: a value orjson refuses
            error = rollout.error
            stats.add(rollout)
            unreachable = reach.stop_reason(rollout)
            progress.update(stats)
            del rollout  # nothing of a written rollout outlives it
            if error is not None:
                failed = sum(stats.failures.values())
                if error.get("kind") == "auth":
                    control.stop(f"the model endpoint refused the credentials (check the API key): "
                                 f"{error.get('message')}", at_once=True)
                elif unreachable:  # every other call would fail the same way
                    control.stop(unreachable, at_once=True)
                elif tolerated is not None and failed > tolerated:
                    control.stop(f"{failed} rollouts failed, more than --max-failures "
                                 f"{config.max_failures:g} allows ({tolerated})")

    started = time.perf_counter()
    parallel = config.parallel if config.parallel > 0 else max(total, 1)
    most_in_flight = min(parallel, total)
    # where this process's connections go: the runners, else the model's replicas
    targets = (config.ray.workers or 1) if config.ray is not None else destinations(config.servers or config.model_urls)
    for warning in (ensure_open_files(most_in_flight), check_ports(most_in_flight, targets)):
        if warning:
            progress.note(warning)
    if config.handle_signals:
        control.install_signal_handlers()
    try:
        try:
            async with asyncio.TaskGroup() as group:
                for started_workers in range(min(parallel, max(total, 1))):
                    if started_workers and started_workers % START_BATCH == 0:
                        await asyncio.sleep(0)  # let the loop send what is ready before starting more
                    if control.stopping:
                        break
                    control.tasks.append(group.create_task(worker()))
        except BaseExceptionGroup as group_error:  # surface the first real cause
            raise group_error.exceptions[0] from None
    finally:
        control.remove_signal_handlers()
        writer.close()
        failures.close()
        progress.close(stats)
    summary = stats.summary(
        time.perf_counter() - started,
        status=control.status,
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
        **stuck_summary(getattr(runner, "stuck_hook_calls", dict)()),  # a served runner keeps its own
    )
    write_json_atomic(metrics_path(output), summary)
    return summary
