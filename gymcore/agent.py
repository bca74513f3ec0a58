"""The agent loop: ask the model, run its tool calls, repeat, then score.

One function, :func:`run_rollout`, used by embedded and served collection alike.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from .affinity import start_rollout
from .backends import DEFAULT_MODEL_TIMEOUT, ModelBackend
from .config import merge_params
from .data import Rollout, Task, Timing, VerdictError
from .environment import Environment
from .errors import ModelError
from .judge import Judge, JudgeError
from .replies import checked, mark_cut_off
from .retry import RetryPolicy, call_with_retries
from .tokens import is_monotonic, requiring_tokens

#: A model that keeps calling tools is stopped after this many model calls by default.
DEFAULT_MAX_STEPS = 16


@attrs.define
class AgentConfig:
    """How the loop runs: step bound, ``responses_create_params`` overrides, how failed
    model calls are retried, and how long one may take (handed to the backend)."""

    max_steps: int = DEFAULT_MAX_STEPS
    overrides: dict[str, Any] = attrs.field(factory=dict)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    model_timeout: float = DEFAULT_MODEL_TIMEOUT
    #: ``BACKEND:NAME`` of the judge model ``verify`` may call (``session.judge``); built by
    #: the runner, embedded or served, next to the policy's backend
    judge_model: str | None = None
    #: ask the backend for token ids and logprobs per call (:mod:`gymcore.tokens`)
    return_tokens: bool = False
    #: ``--seed-repeats``: each request carries ``seed = rollout_index`` (NeMo Gym's
    #: ``num_repeats_add_seed``), so a repeat can be reproduced on a server that honours it
    seed_repeats: bool = False


def add_usage(total: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Sum ``usage`` into ``total`` in place, nested detail dicts included."""
    if not usage:
        return
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            add_usage(total.setdefault(key, {}), value)


def episode_output(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The episode as a valid Responses ``output``: tool outputs get the ``id`` and
    ``status`` an output item has (they are sent to the model without them)."""
    return [
        {**item, "id": f"fco_{item.get('call_id')}", "status": "completed"}
        if item.get("type") == "function_call_output" else item
        for item in items
    ]


def build_request(task: Task, env: Environment, config: AgentConfig, rollout_index: int = 0) -> dict[str, Any]:
    """The first request of a rollout: the row's params, overridden, tools filled in, and
    ``seed = rollout_index`` with ``--seed-repeats``."""
    request = merge_params(task.responses_create_params, config.overrides)
    if config.seed_repeats:
        request["seed"] = rollout_index
    request["input"] = task.input_items()
    if "tools" not in request and env.tools:
        request["tools"] = env.tools
    return request


def plugin_error(hook: str, exc: BaseException) -> dict[str, Any]:
    """The ``error`` of a rollout ended by a plugin exception in ``hook``."""
    kind = type(exc).__name__
    message = str(exc) if isinstance(exc, VerdictError) else f"{hook} raised {kind}: {exc}"  # returned, not raised
    return {"type": "plugin", "kind": kind, "status": None, "hook": hook, "message": message}


async def run_rollout(
    env: Environment,
    model: ModelBackend,
    task: Task,
    *,
    task_index: int,
    rollout_index: int,
    config: AgentConfig,
    judge: Judge | None = None,
) -> Rollout:
    """Run one whole rollout. A model call that still fails after the retries of
    ``config.retry``, or a plugin exception in ``setup_session``/``verify``, ends it with
    ``error`` set and no reward (the collector files it as a failure, never as a reward);
    tool failures do not: the model sees them as tool output. A ``judge`` is handed to the
    hooks as ``session.judge``; if it fails, so does the rollout (class ``judge:...``)."""
    start_rollout()  # model replicas: every call of this rollout goes to one (gymcore.affinity)
    clock = time.perf_counter
    started = clock()
    timing = Timing()
    rollout = Rollout(task=task, task_index=task_index, rollout_index=rollout_index,
                      agent=env.name, model=model.label, timing=timing)
    request = build_request(task, env, config, rollout_index)
    # what the first call receives is what the output line records (the row's own is kept too)
    rollout.sent_params = {**request, "input": task.responses_create_params.get("input", request["input"])}
    base_input = request["input"]
    items: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    last: dict[str, Any] = {}
    session = None
    judged = judge.for_rollout() if judge is not None else None
    create_response = checked(model)  # a reply that says it failed raises, and is retried
    if config.return_tokens:  # a reply without its tokens is model:no_tokens, never a turn
        create_response = requiring_tokens(create_response, model.label)
    stage = "setup_session"  # which hook was running, for the error message
    try:
        session = await env.open_session(task, judge=judged)
        stop = "max_steps"
        for _ in range(config.max_steps):
            request["input"] = base_input + items
            stage = "create_response"
            t0 = clock()
            try:
                last = await call_with_retries(create_response, request, config.retry)
            finally:
                timing.model_s += clock() - t0
            rollout.turns += 1
            mark_cut_off(last, request)  # a tool call cut off by max_output_tokens is not run
            add_usage(usage, last.get("usage"))
            output = last.get("output") or []
            items.extend(output)
            calls = [item for item in output if item.get("type") == "function_call"]
            if last.get("status") == "incomplete":
                stop = "incomplete"
                break
            if not calls:
                stop = "completed"
                break
            stage = "call_tool"
            t0 = clock()
            for call in calls:
                text, ok = await env.call_tool(session, call.get("name", ""), call.get("arguments", "{}"))
                rollout.tool_calls += 1
                rollout.tool_errors += not ok
                items.append({"type": "function_call_output", "call_id": call.get("call_id"), "output": text})
            timing.tools_s += clock() - t0
        rollout.stop_reason = stop
        if config.return_tokens:
            rollout.token_monotonic = is_monotonic(items)
        response = dict(last)
        response["output"] = episode_output(items)
        response["usage"] = usage
        rollout.response = response
        stage = "verify"
        t0 = clock()
        verdict = await env.verify(session, response)
        timing.verify_s = clock() - t0
        if judged is not None and judged.error is not None:
            raise judged.error  # verify went on without its judge: not a reward either
        rollout.reward = verdict.reward
        rollout.metrics = verdict.metrics
        rollout.reward_components = verdict.reward_components
        stage = "teardown_session"
        session, opened = None, session
        await env.close_session(opened)
    except ModelError as exc:
        rollout.error = {"type": "model", "kind": exc.kind, "status": exc.status, "message": str(exc),
                         "attempts": exc.attempts}
        if items:
            rollout.response = {**last, "output": episode_output(items), "usage": usage}
    except Exception as exc:  # a session hook, verify or a backend bug: a plugin error, not a reward
        rollout.reward = None
        # a hook that turned the judge's failure into an exception of its own: still the judge
        failed_judge = judged.error if judged is not None and judged.error is not None else None
        rollout.error = failed_judge.as_error() if failed_judge else (
            exc.as_error() if isinstance(exc, JudgeError) else plugin_error(stage, exc))
    finally:
        if judged is not None:
            judged.close()  # a def hook given up on may still wait for the judge in its thread
            if judged.calls:
                rollout.judge_usage = judged.usage
        try:
            if session is not None:  # not closed yet: the rollout failed or was cancelled
                await env.close_session(session)
        except Exception as exc:
            if rollout.error is None:
                rollout.reward = None
                rollout.error = plugin_error("teardown_session", exc)
        finally:
            timing.total_s = clock() - started
    return rollout
