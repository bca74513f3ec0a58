"""Helpers for testing a gymcore environment: in-process, no installation, no model, no network.

An environment author's test scripts the model's turns and checks the reward::

    import gym_weather
    from gymcore.testing import assert_reward, call_tool, run_task, tool_call

    def test_right_city_scores_1():
        rollout = run_task(gym_weather, {
            "responses_create_params": {"input": "weather in Paris?"},
            "verifier_metadata": {"expected_city": "Paris"},
        }, model_turns=[tool_call("get_weather", city="Paris"), "Paris: 17°C and sunny."])
        assert_reward(rollout, 1.0, city_correct=1)

    def test_tool():
        assert call_tool(gym_weather, "get_weather", {"city": "Paris"}).json()["conditions"] == "sunny"

Every function takes a *target*: a plugin (a module or an object with ``@hookimpl``
methods), a list of plugins (composed into one environment) or an
:class:`~gymcore.environment.Environment`. Plugins are registered in a fresh plugin manager,
so nothing needs installing and installed plugins never interfere. The rollouts run through
the same agent loop, ``verify`` and replay backend as ``gym collect``.

The functions are plain (they run their own event loop); inside an ``async`` test use the
``a``-prefixed twins (:func:`arun_task`, :func:`acall_tool`, :func:`areplay_examples`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import attrs

from . import responses
from .agent import DEFAULT_MAX_STEPS, AgentConfig, run_rollout
from .data import Rollout, Task, Verdict
from .dataset import iter_tasks, validate_row
from .environment import Environment
from .errors import GymError, ModelError
from .plugins import load_plugins

__all__ = [
    "ScriptedModel", "ToolResult", "environment", "aenvironment", "tool_call", "message", "as_task",
    "run_task", "arun_task", "call_tool", "acall_tool", "replay_examples", "areplay_examples",
    "assert_reward", "transcript",
]

_ids = itertools.count(1)


# --- building an environment from plugin objects ---------------------------------------


def _plugin_name(plugin: Any) -> str:
    """``gym_weather`` (a module) -> ``weather``; an object -> its class name, lowercased."""
    name = getattr(plugin, "__name__", None) or type(plugin).__name__.lower()
    name = name.rpartition(".")[2]
    return name[4:] if name.startswith("gym_") and len(name) > 4 else name


async def aenvironment(target: Any, *, name: str | None = None) -> Environment:
    """Async twin of :func:`environment`."""
    if isinstance(target, Environment):
        return target
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    plugins = load_plugins(entry_points=False)
    names = []
    for i, plugin in enumerate(items):
        plugin_name = name if name and len(items) == 1 else _plugin_name(plugin)
        if plugin_name in names:
            plugin_name = f"{plugin_name}{i}"
        plugins.register(plugin, name=plugin_name)
        names.append(plugin_name)
    return await Environment.create(plugins, names)


def environment(target: Any, *, name: str | None = None) -> Environment:
    """Register plugin(s) in a fresh, empty plugin manager and build their environment.

    ``target`` is a plugin (module or object), a list of plugins (composed, as
    ``--agent a,b`` does) or an ``Environment`` (returned as is). ``name`` names a single
    plugin (default: a module's name without ``gym_``, or an object's class name).
    """
    return asyncio.run(aenvironment(target, name=name))


# --- a scripted model ------------------------------------------------------------------


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, /, **kwargs: Any) -> dict[str, Any]:
    """A ``function_call`` output item: ``tool_call("add", numbers=[1, 2])``.

    ``arguments`` may be a dict, keyword arguments, or a raw string (to test malformed JSON).
    """
    if arguments is None:
        arguments = kwargs
    elif kwargs:
        raise TypeError("give the arguments as a dict or as keywords, not both")
    n = next(_ids)
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function_call", "id": f"fc_test_{n}", "call_id": f"call_test_{n}", "name": name,
            "arguments": text, "status": "completed"}


def message(text: str) -> dict[str, Any]:
    """An assistant ``message`` output item saying ``text``."""
    return {"type": "message", "id": f"msg_test_{next(_ids)}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _turn_items(turn: Any) -> list[dict[str, Any]]:
    if isinstance(turn, str):
        return [message(turn)]
    if isinstance(turn, dict):
        return [turn]
    if isinstance(turn, (list, tuple)) and all(isinstance(item, (dict, str)) for item in turn):
        return [item for part in turn for item in _turn_items(part)]
    raise TypeError(f"a model turn is a str, an output item dict or a list of them; got {turn!r}")


class ScriptedModel:
    """A model backend that answers with a fixed list of turns, one per request.

    Each turn is what one model response holds: a ``str`` (an assistant message), an output
    item (see :func:`tool_call`, :func:`message`) or a list of items (several tool calls at
    once). ``requests`` keeps every request body, to check what the model was shown.
    Asking for more turns than scripted fails the rollout with a ``ModelError``.
    """

    label = "scripted"

    def __init__(self, turns: Iterable[Any]):
        self.turns = [_turn_items(turn) for turn in turns]
        self.requests: list[dict[str, Any]] = []

    async def create_response(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        n = len(self.requests)
        if n > len(self.turns):
            raise ModelError(f"ScriptedModel: the agent asked for turn {n} but only {len(self.turns)} "
                             "were scripted", kind="protocol")
        return responses.response(id=f"resp_test_{n}", model=self.label, output=self.turns[n - 1],
                                  request=request, created_at=0)

    async def aclose(self) -> None:
        return None


# --- running tasks ---------------------------------------------------------------------


def as_task(task: Task | dict[str, Any] | str) -> Task:
    """A :class:`Task` from a row dict (validated as ``gym collect`` would) or a bare prompt."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        task = {"responses_create_params": {"input": task}}
    return validate_row(task, "<task>", 1)


async def arun_task(target: Any, task: Task | dict[str, Any] | str, model_turns: Sequence[Any] | None = None,
                    *, model: Any = None, max_steps: int = DEFAULT_MAX_STEPS,
                    overrides: dict[str, Any] | None = None) -> Rollout:
    """Async twin of :func:`run_task`."""
    if (model is None) == (model_turns is None):
        raise TypeError("give either model_turns or model")
    env = await aenvironment(target)
    backend = model if model is not None else ScriptedModel(model_turns)
    return await run_rollout(env, backend, as_task(task), task_index=0, rollout_index=0,
                             config=AgentConfig(max_steps=max_steps, overrides=dict(overrides or {})))


def run_task(target: Any, task: Task | dict[str, Any] | str, model_turns: Sequence[Any] | None = None,
             *, model: Any = None, max_steps: int = DEFAULT_MAX_STEPS,
             overrides: dict[str, Any] | None = None) -> Rollout:
    """Run one task through the environment with scripted model turns; return the scored
    :class:`~gymcore.data.Rollout` (``reward``, ``metrics``, ``response``, ``error``).

    ``task`` is an input row (a dict as in a JSONL line), a :class:`Task` or a bare prompt.
    ``model_turns`` scripts the model (see :class:`ScriptedModel`); or pass any backend
    object as ``model``. Tools, sessions and ``verify`` run for real.
    """
    return asyncio.run(arun_task(target, task, model_turns, model=model, max_steps=max_steps,
                                 overrides=overrides))


@attrs.frozen
class ToolResult:
    """One tool call's result: ``text`` is exactly what the model would see; ``ok`` is False
    when the call failed (unknown tool, bad arguments, the tool raised)."""

    text: str
    ok: bool

    def json(self) -> Any:
        """``text`` parsed as JSON (tools that return dicts or lists are sent JSON-encoded)."""
        return json.loads(self.text)


async def acall_tool(target: Any, name: str, arguments: dict[str, Any] | str | None = None, *,
                     task: Task | dict[str, Any] | str = "") -> ToolResult:
    """Async twin of :func:`call_tool`."""
    env = await aenvironment(target)
    session = await env.open_session(as_task(task))
    try:
        text, ok = await env.call_tool(session, name, {} if arguments is None else arguments)
    finally:
        await env.close_session(session)
    return ToolResult(text, ok)


def call_tool(target: Any, name: str, arguments: dict[str, Any] | str | None = None, *,
              task: Task | dict[str, Any] | str = "") -> ToolResult:
    """Call one tool as the agent loop would, inside a fresh session (``setup_session`` and
    ``teardown_session`` run around it) for ``task`` (default: an empty prompt)."""
    return asyncio.run(acall_tool(target, name, arguments, task=task))


async def areplay_examples(target: Any, *, limit: int | None = None) -> list[Rollout]:
    """Async twin of :func:`replay_examples`."""
    from .replay import ReplayBackend

    env = await aenvironment(target)
    if env.example_dataset_path is None or env.example_rollouts_path is None:
        raise GymError(f"{env.name!r} needs both example_dataset and example_rollouts hooks to replay")
    model = ReplayBackend(Path(env.example_rollouts_path))
    config = AgentConfig()
    return [await run_rollout(env, model, task, task_index=i, rollout_index=0, config=config)
            for i, (_line, task) in enumerate(iter_tasks(env.example_dataset_path, limit))]


def replay_examples(target: Any, *, limit: int | None = None) -> list[Rollout]:
    """Run the environment's example tasks with the ``replay`` backend, exactly as
    ``gym collect --agent NAME --model replay`` does; return the scored rollouts, in order.
    Tools and ``verify`` run for real, so this catches a recording that no longer matches."""
    return asyncio.run(areplay_examples(target, limit=limit))


# --- checking the outcome ----------------------------------------------------------------


def transcript(rollout: Rollout) -> str:
    """A short human-readable account of the episode, for assertion messages."""
    lines = []
    for item in (rollout.response or {}).get("output") or []:
        kind = item.get("type", "message")
        if kind == "function_call":
            lines.append(f"  call   {item.get('name')}({item.get('arguments')})")
        elif kind == "function_call_output":
            lines.append(f"  output {item.get('output')}")
        elif kind == "message":
            lines.append(f"  {item.get('role', 'assistant')}: {responses.message_text(item)}")
        else:
            lines.append(f"  {kind}")
    return "\n".join(lines) or "  (no output)"


def assert_reward(rollout: Rollout | Verdict, expected: float, *, abs_tol: float = 1e-9, **metrics: Any) -> None:
    """Assert the rollout finished without error with reward ``expected`` and, for each
    keyword, that metric's value: ``assert_reward(rollout, 0.5, city_correct=1)``.
    The failure message shows the reward, metrics, error and the episode."""
    problems = []
    error = getattr(rollout, "error", None)
    if error:
        problems.append(f"the rollout failed: {error}")
    if rollout.reward is None or not abs(rollout.reward - expected) <= abs_tol:
        problems.append(f"reward {rollout.reward!r} != expected {expected!r}")
    for key, value in metrics.items():
        if rollout.metrics.get(key, "<missing>") != value:
            problems.append(f"metric {key}={rollout.metrics.get(key, '<missing>')!r} != expected {value!r}")
    if problems:
        episode = transcript(rollout) if isinstance(rollout, Rollout) else ""
        raise AssertionError("; ".join(problems) + f"\nmetrics: {rollout.metrics}\nepisode:\n{episode}")
