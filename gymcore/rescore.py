"""Re-scoring stored rollouts: ``verify`` again on every line of a rollouts file, with no
model call, for a fixed or changed verifier. Writes a new file (never the one it reads);
a line whose ``verify`` raises goes to the new file's failures sidecar, not into it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from .agent import plugin_error
from .data import Rollout, Verdict, converter
from .dataset import validate_row
from .environment import Environment
from .errors import GymError
from .metrics import RunStats
from .runfiles import recorded_pass_threshold
from .plugins import Plugins
from .runfiles import (JsonlAppender, RolloutSink, check_rollout_line, failures_path, metrics_path,
                       read_complete_lines, refuse_to_overwrite, refuse_to_write_over_input, write_json_atomic)
from .runlock import RunLock
from .runners import split_agent


@attrs.define
class RescoreConfig:
    rollouts: Path
    output: Path
    agent: str | None = None  # None: each line's own ``agent``
    overwrite: bool = False
    parallel: int = 16


async def verify_stored(env: Environment, rollout: Rollout) -> Verdict | dict[str, Any]:
    """The verdict of ``env`` on a stored rollout, or the plugin error that prevented it."""
    session, stage = None, "setup_session"
    try:
        session = await env.open_session(rollout.task)
        stage = "verify"
        verdict = await env.verify(session, rollout.response or {})
        stage = "teardown_session"
        session, opened = None, session
        await env.close_session(opened)
        return verdict
    except Exception as exc:
        return plugin_error(stage, exc)
    finally:
        if session is not None:
            try:
                await env.close_session(session)
            except Exception:  # the rollout has failed already; its first error is the one reported
                pass


def check_rollouts_file(source: Path, agent: str | None) -> set[str]:
    """Read the whole file once (streaming) and raise at the first line that is not a stored
    rollout, naming file, line and field, so a bad file fails before any output exists.
    Return the agents whose verify will score the lines."""
    agents = {agent} if agent else set()
    for line_no, line in read_complete_lines(source, repair=False, on_warning=lambda _message: None):
        check_rollout_line(source, line_no, line)
        validate_row(line, str(source), line_no)  # the task row it extends
        if not agent:
            if not isinstance(line.get("agent"), str) or not line["agent"]:
                raise GymError(f"{source}:{line_no}: field 'agent': missing; pass --agent NAME")
            agents.add(line["agent"])
    return agents


async def rescore(plugins: Plugins, config: RescoreConfig) -> dict[str, Any]:
    """Re-run ``verify`` on every rollout of ``config.rollouts``; return the summary (also
    written to the output's ``.metrics.json``). Holds the output's run lock throughout."""
    with RunLock(config.output):
        return await _rescore(plugins, config)


async def _rescore(plugins: Plugins, config: RescoreConfig) -> dict[str, Any]:
    source, output = config.rollouts, config.output
    if not source.is_file():
        raise GymError(f"{source}: no such file")
    refuse_to_write_over_input(output, source)
    if not config.overwrite:
        refuse_to_overwrite(output, hint="pass --overwrite to replace it")
    envs: dict[str, Environment] = {}
    for name in sorted(check_rollouts_file(source, config.agent)):  # before anything is written
        envs[name] = await Environment.create(plugins, split_agent(name), threads=config.parallel)

    async def env_for(agent: str) -> Environment:  # lines appended since the check may name others
        if agent not in envs:
            envs[agent] = await Environment.create(plugins, split_agent(agent), threads=config.parallel)
        return envs[agent]

    # The file's number of repeats is not known up front: pass@k is folded at the end.
    stats = RunStats(repeats=sys.maxsize, threshold=recorded_pass_threshold(source))
    counts: Counter = Counter()
    before_sum = 0.0

    async def one(line_no: int, line: dict[str, Any]) -> tuple[Rollout, float | None]:
        try:
            rollout = converter.structure(line, Rollout)
        except (KeyError, TypeError, ValueError) as exc:
            raise GymError(f"{source}:{line_no}: not a stored rollout ({type(exc).__name__}: {exc})") from None
        old = rollout.reward
        rollout.judge_usage = None  # the collection's judge: the new verdict is verify's here, without a judge
        agent = config.agent or rollout.agent
        if rollout.response is None:  # a failed rollout stored by an older gymcore: nothing to verify
            rollout.error = {"type": "unscorable", "kind": None, "status": None,
                             "message": "the line has no response to verify"}
            return rollout, old
        result = await verify_stored(await env_for(agent), rollout)
        if isinstance(result, Verdict):
            rollout.reward, rollout.metrics, rollout.error = result.reward, result.metrics, None
            rollout.reward_components = result.reward_components
        else:
            rollout.reward, rollout.error = None, result
        return rollout, old

    output.parent.mkdir(parents=True, exist_ok=True)
    failures_file = failures_path(output)
    failures_file.unlink(missing_ok=True)
    writer = JsonlAppender(output, "wb").open()
    failures = JsonlAppender(failures_file, "wb")
    sink = RolloutSink(writer, failures, invocation=1)
    started = time.perf_counter()

    try:
        batch: list[tuple[int, dict[str, Any]]] = []
        lines = read_complete_lines(source, repair=False)
        while True:
            batch.clear()
            for item in lines:
                batch.append(item)
                if len(batch) >= config.parallel:
                    break
            if not batch:
                break
            results = await asyncio.gather(*(one(n, line) for n, line in batch))
            for rollout, old in results:  # in input order
                sink.write(rollout)  # may make it a failure: a value orjson refuses
                stats.add(rollout)
                if rollout.error is not None:
                    continue
                counts["rescored"] += 1
                if old is None:
                    continue
                before_sum += old
                counts["scored_before"] += 1
                if rollout.reward != old:
                    counts["changed"] += 1
                    counts["increased" if rollout.reward > old else "decreased"] += 1
    finally:
        writer.close()
        failures.close()
    summary = stats.summary(
        time.perf_counter() - started,
        rollouts_file=str(source),
        output=str(output),
        **({"failures_file": str(failures_file)} if failures.lines else {}),
        rescored=counts["rescored"],
        changed=counts["changed"],
        increased=counts["increased"],
        decreased=counts["decreased"],
        mean_reward_before=before_sum / counts["scored_before"] if counts["scored_before"] else None,
    )
    for key in ("resumed", "mean_turns", "tool_calls", "tool_errors", "input_tokens", "output_tokens",
                "total_tokens"):
        summary.pop(key, None)  # about the collection, not the re-scoring
    write_json_atomic(metrics_path(output), summary)
    return summary
