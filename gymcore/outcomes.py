"""What a finished run says about each of its tasks: the rewards of its scored repeats and
the failures still outstanding. ``gym compare`` and ``gym filter`` both start here.

A task is known by its row, not by its position: by the row's ``id`` when it has one,
else by a hash of the row's content (the output line minus what gymcore added), so two
runs over the same tasks pair up even when their inputs were ordered differently.
Failures count apart from rewards: a failure record whose rollout a later ``--resume``
scored is history, not an outstanding failure, and no failure is ever a reward of 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import attrs
import orjson

from .data import Rollout, converter
from .errors import GymError
from .runfiles import check_rollout_line, failures_path, read_complete_lines


@attrs.define(slots=True)
class TaskOutcome:
    """One task of a run: its scored rewards (in rollout order) and outstanding failures."""

    key: str
    task_index: int
    label: str
    rewards: list[float] = attrs.field(factory=list)
    failed: int = 0

    def passes(self, threshold: float) -> int:
        return sum(reward >= threshold for reward in self.rewards)

    def pass_rate(self, threshold: float) -> float | None:
        return self.passes(threshold) / len(self.rewards) if self.rewards else None

    @property
    def mean_reward(self) -> float | None:
        return sum(self.rewards) / len(self.rewards) if self.rewards else None


@attrs.define
class RunOutcomes:
    """Every task of one run, keyed by :func:`task_key`, in order of first appearance."""

    path: Path
    tasks: dict[str, TaskOutcome]
    scored: int
    failed: int
    failure_classes: dict[str, int]


def row_of_line(line: dict[str, Any]) -> dict[str, Any]:
    """The input row an output (or failures) line extends, as the collector read it."""
    rollout = converter.structure({"task_index": 0, "rollout_index": 0, **line}, Rollout)
    return converter.unstructure(rollout.task)


_FAILURE_KEYS = ("class", "message", "attempts", "invocation", "elapsed_s")


def task_key(row: dict[str, Any]) -> str:
    """``id:<id>`` when the row has a scalar ``id``, else ``sha256:<hash of its content>``."""
    identity = row.get("id")
    if isinstance(identity, (str, int)) and not isinstance(identity, bool):
        return f"id:{identity}"
    canonical = orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()[:20]


def task_label(row: dict[str, Any], limit: int = 80) -> str:
    """A short, human name for a task: its id, or the start of its last user message."""
    if row.get("id") is not None:
        return str(row["id"])
    params = row.get("responses_create_params") or {}
    items = params.get("input")
    text = items if isinstance(items, str) else ""
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                content = item.get("content")
                text = content if isinstance(content, str) else " ".join(
                    part.get("text", "") for part in content or [] if isinstance(part, dict))
                break
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_run(path: Path) -> RunOutcomes:
    """Read a run's output and failures sidecar into per-task outcomes (streaming)."""
    path = Path(path)
    if not path.is_file():
        raise GymError(f"{path}: no such file")
    tasks: dict[str, TaskOutcome] = {}
    by_index: dict[int, str] = {}
    done: set[tuple[int, int]] = set()
    scored = 0

    def outcome(line: dict[str, Any]) -> TaskOutcome:
        key = by_index.get(line["task_index"])
        if key is None:  # the row is hashed once per task, not once per repeat
            row = row_of_line(line)
            key = task_key(row)
            by_index[line["task_index"]] = key
            if key not in tasks:
                tasks[key] = TaskOutcome(key=key, task_index=line["task_index"], label=task_label(row))
        return tasks[key]

    for line_no, line in read_complete_lines(path, repair=False, on_warning=lambda _message: None):
        check_rollout_line(path, line_no, line)
        if line.get("error") is not None or line.get("reward") is None:
            continue  # gymcore never writes these; an edited file's failures are not rewards
        outcome(line).rewards.append(float(line["reward"]))
        done.add((line["task_index"], line["rollout_index"]))
        scored += 1
    failures: dict[tuple[int, int], dict[str, Any]] = {}
    sidecar = failures_path(path)
    if sidecar.exists():
        for _line_no, line in read_complete_lines(sidecar, repair=False, on_warning=lambda _message: None):
            pair = (line.get("task_index"), line.get("rollout_index"))
            if isinstance(pair[0], int) and isinstance(pair[1], int) and pair not in done:
                failures[pair] = line  # the latest record of each rollout
    classes: dict[str, int] = {}
    for line in failures.values():
        row = {k: v for k, v in line.items() if k not in _FAILURE_KEYS}
        outcome(row).failed += 1
        classes[line.get("class") or "unknown"] = classes.get(line.get("class") or "unknown", 0) + 1
    return RunOutcomes(path=path, tasks=tasks, scored=scored, failed=len(failures), failure_classes=classes)
