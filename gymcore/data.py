"""The records that flow through a collection: task rows in, rollouts out.

All are attrs classes; one cattrs converter (``converter``) turns them into JSON-ready
dicts and back. Rows keep keys they do not know (``Task.extra``), so a dataset written for
NeMo Gym or with extra bookkeeping columns passes through unchanged.
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any

import attrs
import cattrs

from .jsonvalues import problem, unwritable_error, unwritable_fields

_session_ids = itertools.count(1)


@attrs.define(slots=True)
class Task:
    """One input row: what the model is asked, and what ``verify`` needs to judge it."""

    responses_create_params: dict[str, Any]
    verifier_metadata: dict[str, Any] | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    KNOWN_KEYS = ("responses_create_params", "verifier_metadata")

    def input_items(self) -> list[dict[str, Any]]:
        """The row's ``input`` as a list of items (a bare string is one user message)."""
        value = self.responses_create_params.get("input", [])
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        return list(value)


@attrs.define(slots=True)
class Session:
    """Per-rollout state handed to ``call_tool`` and ``verify``; plugins own ``state``."""

    task: Task
    id: str = attrs.field(factory=lambda: f"s{next(_session_ids)}")
    state: dict[str, Any] = attrs.field(factory=dict)
    #: the judge model for ``verify`` (:class:`gymcore.judge.RolloutJudge`); ``None`` unless
    #: the run has ``--judge-model``
    judge: Any = None


@attrs.define(slots=True)
class Verdict:
    """What ``verify`` returns: a reward (any finite number), named metrics, and optionally
    the reward's named parts (``reward_components``, as NeMo RL reads them)."""

    reward: float = 1.0
    metrics: dict[str, Any] = attrs.field(factory=dict)
    reward_components: dict[str, float] | None = None


@attrs.define(slots=True)
class Timing:
    total_s: float = 0.0
    model_s: float = 0.0
    tools_s: float = 0.0
    verify_s: float = 0.0


@attrs.define(slots=True)
class Rollout:
    """One finished rollout: the output line, minus the input row it extends."""

    task: Task
    task_index: int
    rollout_index: int
    agent: str
    model: str
    response: dict[str, Any] | None = None
    reward: float | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    stop_reason: str | None = None
    timing: Timing = attrs.field(factory=Timing)
    error: dict[str, Any] | None = None
    #: tokens the judge model used for this rollout's verify (``None``: no judge call)
    judge_usage: dict[str, Any] | None = None
    #: with --return-tokens: whether every call's prompt ids extend the previous call's
    #: prompt + generation ids (:func:`gymcore.tokens.is_monotonic`); ``None``: no tokens
    token_monotonic: bool | None = None
    #: the named parts of the reward verify returned, if it did
    reward_components: dict[str, float] | None = None
    #: ``responses_create_params`` as the first model call received them (overrides applied,
    #: tools filled in, seed added); ``None``: the row's own (no call was prepared)
    sent_params: dict[str, Any] | None = None
    #: what ``Collector.set_model_version`` said when this rollout started (``None``: never
    #: set; the line then has no such key), so an async trainer can drop stale rollouts
    model_version: Any = None


converter = cattrs.Converter()

#: Where an output line keeps the row's own ``responses_create_params`` when what the
#: first model call received differs (overrides, tools filled in, ``--seed-repeats``).
ROW_PARAMS_KEY = "row_responses_create_params"


def _unstructure_task(task: Task) -> dict[str, Any]:
    row: dict[str, Any] = dict(task.extra)
    row["responses_create_params"] = task.responses_create_params
    if task.verifier_metadata is not None:
        row["verifier_metadata"] = task.verifier_metadata
    return row


def _structure_task(row: dict[str, Any], _type: type) -> Task:
    return Task(
        responses_create_params=row["responses_create_params"],
        verifier_metadata=row.get("verifier_metadata"),
        extra={k: v for k, v in row.items() if k not in Task.KNOWN_KEYS},
    )


#: The keys gymcore writes into an output line next to the row's own (and the metrics).
OUTPUT_KEYS = (
    "task_index", "rollout_index", "agent", "model", "response", "reward",
    "metric_names", "turns", "tool_calls", "tool_errors", "stop_reason", "timing", "error", "judge_usage",
    "token_monotonic", "reward_components", ROW_PARAMS_KEY, "_ng_task_index", "_ng_rollout_index", "model_version",
)
#: The keys a failures-sidecar line adds to the row (``runfiles.failure_record``), besides
#: ``task_index``, ``rollout_index``, ``agent``, ``model`` and ``error``.
FAILURE_KEYS = ("class", "message", "attempts", "invocation", "elapsed_s")
#: Names a metric cannot have: the line's own keys (``verify`` returning one is a failure).
RESERVED_METRIC_NAMES = frozenset(OUTPUT_KEYS) | frozenset(Task.KNOWN_KEYS)


def _unstructure_rollout(rollout: Rollout) -> dict[str, Any]:
    # The output line is the input row, extended; metrics sit at the top level next to
    # ``reward`` as in NeMo Gym, so trainers that read NeMo Gym rollouts read ours. What
    # verify returned wins over an input column of the same name (see shadowed_columns).
    line = _unstructure_task(rollout.task)
    sent = rollout.sent_params
    if sent is not None and sent != rollout.task.responses_create_params:
        line[ROW_PARAMS_KEY] = line["responses_create_params"]
        line["responses_create_params"] = sent
    if "agent_ref" not in line and rollout.agent:  # NeMo Gym's key; a row's own is kept as it is
        line["agent_ref"] = {"name": rollout.agent}
    line["response"] = rollout.response
    line["reward"] = rollout.reward
    if rollout.reward_components is not None:
        line["reward_components"] = rollout.reward_components
    names = []
    for key, value in rollout.metrics.items():
        if key not in RESERVED_METRIC_NAMES:  # as_verdict refuses them; a hand-made Rollout may not
            line[key] = value
            names.append(key)
    # Which top-level keys are metrics, so a stored rollout reads back exactly.
    line["metric_names"] = names
    line["task_index"] = rollout.task_index
    line["rollout_index"] = rollout.rollout_index
    # NeMo Gym's names of the same (its `gym eval profile` and aggregate metrics key on them)
    line["_ng_task_index"] = rollout.task_index
    line["_ng_rollout_index"] = rollout.rollout_index
    line["agent"] = rollout.agent
    line["model"] = rollout.model
    line["turns"] = rollout.turns
    line["tool_calls"] = rollout.tool_calls
    line["tool_errors"] = rollout.tool_errors
    line["stop_reason"] = rollout.stop_reason
    line["timing"] = attrs.asdict(rollout.timing)
    line["error"] = rollout.error
    if rollout.judge_usage is not None:
        line["judge_usage"] = rollout.judge_usage
    if rollout.token_monotonic is not None:
        line["token_monotonic"] = rollout.token_monotonic
    if rollout.model_version is not None:
        line["model_version"] = rollout.model_version
    return line


def _structure_rollout(line: dict[str, Any], _type: type) -> Rollout:
    names = line.get("metric_names") or []
    skip = set(OUTPUT_KEYS) | set(names)
    row = {k: v for k, v in line.items() if k not in skip}
    if row.get("agent_ref") == {"name": line.get("agent")}:  # the one the writer added: not the row's
        del row["agent_ref"]
    sent = None
    if isinstance(line.get(ROW_PARAMS_KEY), dict):  # the row's own params, and what was sent
        sent, row["responses_create_params"] = row["responses_create_params"], line[ROW_PARAMS_KEY]
    return Rollout(
        task=_structure_task(row, Task),
        task_index=line["task_index"],
        rollout_index=line["rollout_index"],
        agent=line.get("agent", ""),
        model=line.get("model", ""),
        response=line.get("response"),
        reward=line.get("reward"),
        metrics={k: line[k] for k in names if k in line},
        turns=line.get("turns", 0),
        tool_calls=line.get("tool_calls", 0),
        tool_errors=line.get("tool_errors", 0),
        stop_reason=line.get("stop_reason"),
        timing=converter.structure(line.get("timing") or {}, Timing),
        error=line.get("error"),
        judge_usage=line.get("judge_usage"),
        token_monotonic=line.get("token_monotonic"),
        reward_components=line.get("reward_components"),
        sent_params=sent,
        model_version=line.get("model_version"),
    )


def shadowed_columns(rollout: Rollout) -> list[str]:
    """The input columns of ``rollout``'s row that its metrics replace in the output line."""
    extra = rollout.task.extra
    return [name for name in rollout.metrics if name in extra] if extra and rollout.metrics else []


def fail_unwritable(rollout: Rollout, line: dict[str, Any]) -> None:
    """Turn ``rollout``, whose ``line`` orjson refused, into a failure (class
    ``unwritable:<field>``) whose failure record can be written: a refused response is
    dropped from it, and refused row columns from its task."""
    rollout.reward = None
    rollout.error = unwritable_error(line)
    bad = unwritable_fields(line)
    if "response" in bad:
        rollout.response = None
    for name in bad:
        rollout.task.extra.pop(name, None)


converter.register_unstructure_hook(Task, _unstructure_task)
converter.register_structure_hook(Task, _structure_task)
converter.register_unstructure_hook(Rollout, _unstructure_rollout)
converter.register_structure_hook(Rollout, _structure_rollout)


class VerdictError(ValueError):
    """``verify`` returned something that is not a verdict gymcore can write: its message
    says what (the rollout fails with class ``plugin:verify``)."""


def as_verdict(value: Any, *, where: str = "verify") -> Verdict | None:
    """Normalise what a ``verify`` hook returned into a :class:`Verdict` (or ``None``);
    raise :class:`VerdictError` unless the reward is a finite number (negative and above 1 are
    rewards too: RL rewards are often shaped so), ``reward_components`` (if given) is a dict
    of finite numbers, and every metric can be written to the output line and read back the
    same (see :mod:`gymcore.jsonvalues`)."""
    if value is None:
        return None
    if isinstance(value, Verdict):
        reward, metrics = value.reward, value.metrics
    elif isinstance(value, dict):
        if "reward" not in value:
            raise VerdictError(f"{where} returned a dict without 'reward': {sorted(map(str, value))}")
        reward, metrics = value["reward"], {k: v for k, v in value.items() if k != "reward"}
    elif isinstance(value, numbers.Real):
        reward, metrics = value, {}
    else:
        raise VerdictError(f"{where} returned {type(value).__name__}; expected Verdict, dict, number or None")
    if not isinstance(reward, numbers.Real):
        raise VerdictError(f"{where} returned reward {reward!r} ({type(reward).__name__}), not a number")
    reward = float(reward)
    if not math.isfinite(reward):
        raise VerdictError(f"{where} returned reward {reward!r}, not a finite number")
    if not isinstance(metrics, dict):
        raise VerdictError(f"{where} returned metrics of type {type(metrics).__name__}, not a dict")
    for name, metric in metrics.items():
        if not isinstance(name, str):
            raise VerdictError(f"{where} returned a metric named {name!r} ({type(name).__name__}); "
                               "metric names are strings")
        if name == "reward_components":
            continue
        if name in RESERVED_METRIC_NAMES:
            raise VerdictError(f"{where} returned a metric named {name!r}, a key gymcore writes itself; rename it")
        what = problem(metric, levels_above=1)
        if what is not None:
            raise VerdictError(f"{where} returned metric {name!r} ({type(metric).__name__}): {what}")
    components = metrics.get("reward_components")
    if components is not None:
        metrics = {k: v for k, v in metrics.items() if k != "reward_components"}
        components = _components(components, where)
    elif isinstance(value, Verdict):
        components = _components(value.reward_components, where) if value.reward_components is not None else None
    return Verdict(reward=reward, metrics=metrics, reward_components=components)


def _components(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise VerdictError(f"{where} returned reward_components of type {type(value).__name__}, not a dict")
    out = {}
    for name, number in value.items():
        if not isinstance(name, str):
            raise VerdictError(f"{where} returned a reward component named {name!r}; names are strings")
        if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(number):
            raise VerdictError(f"{where} returned reward component {name!r} = {number!r}, not a finite number")
        out[name] = float(number)
    return out


def components_mismatch(rollout: Rollout) -> str | None:
    """Why ``rollout``'s reward is not the sum of its ``reward_components`` (NeMo RL's GDPO
    needs it to be), or ``None``."""
    parts = rollout.reward_components
    if not parts or rollout.reward is None:
        return None
    total = math.fsum(parts.values())
    if math.isclose(total, rollout.reward, rel_tol=1e-9, abs_tol=1e-9):
        return None
    return (f"task {rollout.task_index} rollout {rollout.rollout_index}: reward {rollout.reward!r} is not the sum "
            f"of its reward_components ({total!r}); NeMo RL's GDPO requires the sum")
