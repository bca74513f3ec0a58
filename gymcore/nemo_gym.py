"""The files NeMo Gym's own tools read, written beside a run's output.

NeMo Gym (github.com/NVIDIA-NeMo/Gym, read at commit 07d6b0d, after v0.5.0) writes, for
``output_jsonl_fpath=results/run.jsonl``:

* ``results/run_materialized_inputs.jsonl``: one line per rollout to run, the input row with
  ``agent_ref``, the overridden ``responses_create_params``, ``_ng_task_index`` and
  ``_ng_rollout_index`` (``RolloutCollectionConfig.materialized_jsonl_fpath`` and
  ``_preprocess_rows_from_config`` in ``nemo_gym/rollout_collection.py``); ``gym eval profile``
  (``nemo_gym/reward_profile.py``, ``RewardProfiler.align_rows_and_results``) joins it with
  the rollouts on the two indices;
* ``results/run_aggregate_metrics.json``: a list with one entry per ``agent_ref.name``:
  ``{"agent_ref": {"name"}, "agent_metrics", "key_metrics", "group_level_metrics"}``
  (``_call_aggregate_metrics`` there; the metrics are ``compute_aggregate_metrics`` in
  ``reward_profile.py``: ``mean/``, ``max/``, ``min/``, ``median/``, ``std/`` of every numeric
  field of the rollouts and of ``response.usage``, over the environment and per task).

gymcore writes the same names and shapes (its output lines carry ``_ng_task_index``,
``_ng_rollout_index`` and ``agent_ref`` beside its own keys; see :mod:`gymcore.data`). The
differences: ``group_level_metrics`` entries leave out NeMo Gym's ``sample`` and
``rollout_infos`` (the rows are in the output already), and ``agent_metrics`` adds
``pass@{k}/passed``: gymcore's pass@k at ``--pass-threshold``, in percent, as NeMo Gym's
``compute_pass_majority_metrics`` would compute it for a score ``passed = reward >= threshold``.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from .data import Task, converter
from .errors import InputError
from .metrics import pass_at_k

TASK_INDEX_KEY = "_ng_task_index"
ROLLOUT_INDEX_KEY = "_ng_rollout_index"
AGENT_REF_KEY = "agent_ref"
#: Top-level fields NeMo Gym leaves out before aggregating (``_call_aggregate_metrics``).
_NOT_AGGREGATED = ("response", "responses_create_params", "ng_agent_observations", "ng_model_call_capture",
                   "ng_trajectory")


def materialized_inputs_path(output: Path) -> Path:
    """``results/run.jsonl`` -> ``results/run_materialized_inputs.jsonl`` (NeMo Gym's name)."""
    return output.with_name(output.stem + "_materialized_inputs.jsonl")


def aggregate_metrics_path(output: Path) -> Path:
    """``results/run.jsonl`` -> ``results/run_aggregate_metrics.json`` (NeMo Gym's name)."""
    return output.with_name(output.stem + "_aggregate_metrics.json")


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fp:
        for chunk in chunks:
            fp.write(chunk)
    os.replace(tmp, path)


def write_materialized_inputs(output: Path, rows: Iterable[tuple[int, Task, str]], repeats: int,
                              overrides: dict[str, Any], seed_repeats: bool) -> Path:
    """Write NeMo Gym's materialized-inputs file for ``rows`` (``(task_index, task,
    environment)``, streamed): each row once per repeat, as the run sends it."""
    path = materialized_inputs_path(output)

    def lines():
        for task_index, task, agent in rows:
            row = converter.unstructure(task)
            row.setdefault(AGENT_REF_KEY, {"name": agent})
            params = {**task.responses_create_params, **overrides}
            for rollout_index in range(repeats):
                row["responses_create_params"] = {**params, "seed": rollout_index} if seed_repeats else params
                row[TASK_INDEX_KEY] = task_index
                row[ROLLOUT_INDEX_KEY] = rollout_index
                yield orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS) + b"\n"

    _write_atomic(path, lines())
    return path


def _numeric(line: dict[str, Any]) -> dict[str, float]:
    """The fields NeMo Gym's ``RewardProfiler`` aggregates: numeric top-level values (bools
    as 0/1) and ``response.usage``'s numbers, the indices left out."""
    usage = (line.get("response") or {}).get("usage") or {}
    out: dict[str, float] = {}
    for source in (line, usage):
        for key, value in source.items():
            if key in _NOT_AGGREGATED or key in (TASK_INDEX_KEY, ROLLOUT_INDEX_KEY):
                continue
            if isinstance(value, bool):
                out[key] = int(value)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                out[key] = value
    return out


def _describe(rows: list[dict[str, float]]) -> dict[str, Any]:
    """``mean/``, ``max/``, ``min/``, ``median/``, ``std/`` per field (pandas' sample std; 0
    for a single row, as ``RewardProfiler.describe_dataframe`` makes it)."""
    columns: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            columns[key].append(value)
    out: dict[str, Any] = {}
    for stat in ("mean", "max", "min", "median", "std"):
        for key, values in columns.items():
            if stat == "mean":
                out[f"mean/{key}"] = math.fsum(values) / len(values)
            elif stat == "max":
                out[f"max/{key}"] = max(values)
            elif stat == "min":
                out[f"min/{key}"] = min(values)
            elif stat == "median":
                out[f"median/{key}"] = statistics.median(values)
            elif len(values) >= 2:
                out[f"std/{key}"] = statistics.stdev(values)
            elif len(rows) == 1:
                out[f"std/{key}"] = 0.0
    return out


def environment_of(line: dict[str, Any]) -> str:
    ref = line.get(AGENT_REF_KEY)
    if isinstance(ref, dict) and isinstance(ref.get("name"), str):
        return ref["name"]
    return str(line.get("agent") or "")


def _aggregate(lines: Iterable[dict[str, Any]], threshold: float) -> Iterator[tuple[dict[str, Any], Iterator[dict]]]:
    """Per environment: its entry without ``group_level_metrics``, and those groups as a
    generator that frees each task's rows once its group is made (a run's groups are as
    many as its tasks: held all at once they were most of a large run's memory)."""
    by_env: dict[str, dict[int, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        if line.get("reward") is None:
            continue
        by_env[environment_of(line)][line.get("task_index", 0)].append(_numeric(line))
    for name in sorted(by_env):
        tasks = by_env.pop(name)
        agent_metrics = _describe([row for task in tasks.values() for row in task])
        passed = [[row["reward"] >= threshold for row in task] for task in tasks.values()]
        highest = max(len(p) for p in passed)
        for k in range(1, highest + 1):
            values = [pass_at_k(len(p), sum(p), k) for p in passed if len(p) >= k]
            agent_metrics[f"pass@{k}/passed"] = 100.0 * math.fsum(values) / len(values)
        agent_metrics["pass_threshold"] = threshold
        key_metrics = {k: v for k, v in agent_metrics.items() if k.startswith("mean/")}
        key_metrics[f"pass@{highest}/passed"] = agent_metrics[f"pass@{highest}/passed"]

        def groups(tasks: dict[int, list[dict[str, float]]] = tasks) -> Iterator[dict[str, Any]]:
            for task_index in sorted(tasks):
                rows = tasks.pop(task_index)
                yield {TASK_INDEX_KEY: task_index, **_describe(rows), "num_rollouts": len(rows)}

        yield {AGENT_REF_KEY: {"name": name}, "agent_metrics": agent_metrics, "key_metrics": key_metrics}, groups()


def aggregate_metrics(lines: Iterable[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """NeMo Gym's aggregate-metrics entries (one per environment) for scored output lines."""
    return [{**entry, "group_level_metrics": list(groups)} for entry, groups in _aggregate(lines, threshold)]


def write_aggregate_metrics(output: Path, lines: Iterable[dict[str, Any]], threshold: float) -> Path:
    """Write :func:`aggregate_metrics` as it is made: each task's group is serialised and
    written before the next is computed, so memory holds the rollouts' numbers, not the
    whole document."""
    path = aggregate_metrics_path(output)
    option = orjson.OPT_NON_STR_KEYS

    def chunks() -> Iterator[bytes]:
        yield b"["
        for n, (entry, groups) in enumerate(_aggregate(lines, threshold)):
            head = orjson.dumps(entry, option=option)
            yield (b",\n" if n else b"\n") + head[:-1] + b', "group_level_metrics": ['
            for i, group in enumerate(groups):
                yield (b",\n" if i else b"\n") + orjson.dumps(group, option=option)
            yield b"\n]}"
        yield b"\n]\n"

    _write_atomic(path, chunks())
    return path


def agent_ref_problem(value: Any) -> tuple[str, str] | None:
    """What is wrong with a row's ``agent_ref`` (``{"name": str, "type": ...}``), as ``(field,
    what)``, or ``None``."""
    if not isinstance(value, dict):
        return AGENT_REF_KEY, f"expected an object like {{\"name\": \"weather\"}}, got {type(value).__name__}"
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{AGENT_REF_KEY}.name", "missing" if name is None else f"expected an environment name, got {name!r}"
    return None


def check_agent_ref(task: Task, path: str, line: int | None) -> None:
    ref = task.extra.get(AGENT_REF_KEY)
    if ref is None:
        return
    problem = agent_ref_problem(ref)
    if problem is not None:
        raise InputError(path, line, problem[1], field=problem[0])
