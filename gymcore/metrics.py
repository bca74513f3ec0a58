"""Run-level statistics: mean reward, pass@k with the unbiased estimator, tokens, failures.

Kept as running sums plus two small integers per task, so memory does not grow with the
number of rollouts per task.
"""

from __future__ import annotations

import re
from collections import Counter
from math import comb
from typing import Any

import attrs

from .data import Rollout

#: A rollout "passes" (for pass@k) when its reward reaches this, unless ``--pass-threshold``
#: says otherwise (rewards may be any finite number).
PASS_THRESHOLD = 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with ``n`` samples of which ``c`` passed (Chen et al.)."""
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def failure_class(error: dict[str, Any] | None) -> str:
    """A failed rollout's class, for summaries and the failures sidecar: ``model:503``,
    ``model:connection``, ``model:auth``, ``plugin:verify``, ``judge:503``, ``timeout``, ..."""
    error = error or {}
    kind = error.get("type") or "unknown"
    if kind in ("model", "judge"):
        detail = error.get("status") if error.get("kind") == "http" and error.get("status") else error.get("kind")
    elif kind == "plugin":
        detail = error.get("hook") or error.get("kind")
    else:
        detail = error.get("kind")
    return f"{kind}:{detail}" if detail else kind


#: How much of a failure message a sample keeps.
SAMPLE_CHARS = 500
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def sample_message(message: Any) -> str:
    """A failure message fit for one terminal line: whitespace and control characters (a
    server's error body is untrusted) collapsed to single spaces, at most SAMPLE_CHARS."""
    text = _CONTROL_OR_SPACE.sub(" ", str(message or "")).strip()
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS - 1] + "…"


@attrs.define
class RunStats:
    """Accumulates rollouts as they finish; :meth:`summary` gives the report.

    pass@k is folded into running sums as soon as all ``repeats`` of a task are in, so
    memory holds only the tasks still in flight, however long the run. A resumed run first
    feeds it the lines already in the output (:meth:`add_line`).
    """

    repeats: int = 1
    #: a rollout passes when its reward is at least this (``--pass-threshold``)
    threshold: float = PASS_THRESHOLD
    rollouts: int = 0
    resumed: int = 0
    scored: int = 0
    reward_sum: float = 0.0
    turns_sum: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    failures: Counter = attrs.field(factory=Counter)
    failure_samples: dict[str, str] = attrs.field(factory=dict)  # class -> its first message
    tasks_done: int = 0
    open_tasks: dict[int, list[int]] = attrs.field(factory=dict)  # task_index -> [seen, scored, passed]
    pass_sums: dict[int, float] = attrs.field(factory=dict)  # k -> sum over tasks of pass@k
    pass_tasks: dict[int, int] = attrs.field(factory=dict)  # k -> tasks with >= k scored samples

    def add(self, rollout: Rollout) -> None:
        self._add_judge(rollout.judge_usage)
        self._add(rollout.task_index, rollout.reward, rollout.error, rollout.turns, rollout.tool_calls,
                  rollout.tool_errors, (rollout.response or {}).get("usage"))

    def add_line(self, line: dict[str, Any]) -> None:
        """Count a rollout already in the output of a resumed run."""
        self.resumed += 1
        self._add_judge(line.get("judge_usage"))
        self._add(line.get("task_index"), line.get("reward"), line.get("error"), line.get("turns") or 0,
                  line.get("tool_calls") or 0, line.get("tool_errors") or 0,
                  (line.get("response") or {}).get("usage"))

    def _add_judge(self, usage: dict[str, Any] | None) -> None:
        """The judge's tokens, kept apart from the policy's."""
        if usage:
            self.judge_input_tokens += usage.get("input_tokens", 0) or 0
            self.judge_output_tokens += usage.get("output_tokens", 0) or 0

    def _add(self, task_index: Any, reward: float | None, error: dict[str, Any] | None, turns: int,
             tool_calls: int, tool_errors: int, usage: dict[str, Any] | None) -> None:
        self.rollouts += 1
        self.turns_sum += turns
        self.tool_calls += tool_calls
        self.tool_errors += tool_errors
        usage = usage or {}
        self.input_tokens += usage.get("input_tokens", 0) or 0
        self.output_tokens += usage.get("output_tokens", 0) or 0
        self.total_tokens += usage.get("total_tokens", 0) or 0
        counts = self.open_tasks.setdefault(task_index, [0, 0, 0])
        counts[0] += 1
        if error is not None or reward is None:
            cls = failure_class(error)
            self.failures[cls] += 1
            if cls not in self.failure_samples:
                self.failure_samples[cls] = sample_message((error or {}).get("message"))
        else:
            self.scored += 1
            self.reward_sum += reward
            counts[1] += 1
            counts[2] += reward >= self.threshold
        if counts[0] >= self.repeats:
            del self.open_tasks[task_index]
            self._fold(counts[1], counts[2], self.pass_sums, self.pass_tasks)
            self.tasks_done += 1

    @staticmethod
    def _fold(n: int, c: int, sums: dict[int, float], tasks: dict[int, int]) -> None:
        for k in range(1, n + 1):
            sums[k] = sums.get(k, 0.0) + pass_at_k(n, c, k)
            tasks[k] = tasks.get(k, 0) + 1

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.scored if self.scored else None

    def pass_at(self) -> dict[str, float]:
        """pass@k for k = 1 .. repeats, each over the tasks with at least k scored samples."""
        sums, tasks = dict(self.pass_sums), dict(self.pass_tasks)
        for _seen, n, c in self.open_tasks.values():  # tasks cut short (interrupt, failures)
            self._fold(n, c, sums, tasks)
        return {f"pass@{k}": sums[k] / tasks[k] for k in sorted(tasks)}

    def summary(self, wall_s: float, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "rollouts": self.rollouts,
            "resumed": self.resumed,
            "scored": self.scored,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "failure_samples": dict(self.failure_samples),
            "tasks": self.tasks_done + len(self.open_tasks),
            "mean_reward": self.mean_reward,
            "pass_threshold": self.threshold,
            **self.pass_at(),
            "mean_turns": self.turns_sum / self.rollouts if self.rollouts else None,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            **({"judge_input_tokens": self.judge_input_tokens, "judge_output_tokens": self.judge_output_tokens}
               if self.judge_input_tokens or self.judge_output_tokens else {}),
            "wall_s": round(wall_s, 3),
            # this invocation's pace: rollouts found in the output at resume do not count
            "rollouts_per_s": round((self.rollouts - self.resumed) / wall_s, 2) if wall_s > 0 else None,
        }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned ``key: value`` lines for the terminal."""
    lines = []
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
            value = ("\n" + " " * (width + 2)).join(f"{k}: {v}" for k, v in value.items())  # one per line
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            value = ("\n" + " " * (width + 2)).join(  # one line per entry (e.g. per environment)
                f"{k}: " + ", ".join(f"{n}={_short(v)}" for n, v in entry.items()) for k, entry in value.items())
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        lines.append(f"{key.rjust(width)}: {value}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
