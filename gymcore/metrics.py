"""Run-level statistics: mean reward, pass@k with the unbiased estimator, tokens, failures.

Kept as running sums plus two small integers per task, so memory does not grow with the
number of rollouts per task.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Any

import attrs

from .data import Rollout

#: A rollout "passes" (for pass@k) when its reward reaches this.
PASS_THRESHOLD = 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with ``n`` samples of which ``c`` passed (Chen et al.)."""
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@attrs.define
class RunStats:
    """Accumulates rollouts as they finish; :meth:`summary` gives the report."""

    rollouts: int = 0
    scored: int = 0
    reward_sum: float = 0.0
    turns_sum: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    failures: Counter = attrs.field(factory=Counter)
    per_task: dict[int, list[int]] = attrs.field(factory=dict)  # task_index -> [n, passed]

    def add(self, rollout: Rollout) -> None:
        self.rollouts += 1
        self.turns_sum += rollout.turns
        self.tool_calls += rollout.tool_calls
        self.tool_errors += rollout.tool_errors
        usage = (rollout.response or {}).get("usage") or {}
        self.input_tokens += usage.get("input_tokens", 0) or 0
        self.output_tokens += usage.get("output_tokens", 0) or 0
        self.total_tokens += usage.get("total_tokens", 0) or 0
        if rollout.error is not None or rollout.reward is None:
            error = rollout.error or {}
            self.failures[f"{error.get('type', 'unknown')}:{error.get('kind', '')}".rstrip(":")] += 1
            return
        self.scored += 1
        self.reward_sum += rollout.reward
        counts = self.per_task.setdefault(rollout.task_index, [0, 0])
        counts[0] += 1
        counts[1] += rollout.reward >= PASS_THRESHOLD

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.scored if self.scored else None

    def pass_at(self) -> dict[str, float]:
        """pass@k for k = 1 .. the smallest number of scored repeats of any task."""
        if not self.per_task:
            return {}
        k_max = min(n for n, _ in self.per_task.values())
        out = {}
        for k in range(1, k_max + 1):
            values = [pass_at_k(n, c, k) for n, c in self.per_task.values()]
            out[f"pass@{k}"] = sum(values) / len(values)
        return out

    def summary(self, wall_s: float, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "rollouts": self.rollouts,
            "scored": self.scored,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "tasks": len(self.per_task),
            "mean_reward": self.mean_reward,
            **self.pass_at(),
            "mean_turns": self.turns_sum / self.rollouts if self.rollouts else None,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "wall_s": round(wall_s, 3),
            "rollouts_per_s": round(self.rollouts / wall_s, 2) if wall_s > 0 else None,
        }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned ``key: value`` lines for the terminal."""
    lines = []
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        lines.append(f"{key.rjust(width)}: {value}")
    return "\n".join(lines)
