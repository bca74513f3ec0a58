"""The overview's figures: the index's running totals, pass@k with gymcore's estimator, and
one pass over two small arrays for the histograms."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs

from ..metrics import pass_at_k
from .index import RolloutColumns, RolloutIndex
from .query import task_rows


def pass_ks(k_max: int) -> list[int]:
    """1, 2, 4, ... up to ``k_max``, and ``k_max`` itself."""
    ks, k = [], 1
    while k < k_max:
        ks.append(k)
        k *= 2
    return ks + [k_max] if k_max >= 1 else []


@attrs.define
class Overview:
    lines: int
    parsed: int
    rollouts: int
    scored: int
    failed: int
    bad_lines: int
    tasks: int
    repeats: tuple[int, int] | None
    mean_reward: float | None
    pass_at: list[tuple[int, float]]
    failures: list[tuple[str, int]]
    tools: list[tuple[str, int]]
    tool_calls: int
    tool_errors: int
    mean_turns: float | None
    tokens: dict[str, int]
    usage_details: list[tuple[str, float]]
    timing: list[tuple[str, float]]
    metrics: list[tuple[str, float, int]]
    models: list[tuple[str, int]]
    agents: list[tuple[str, int]]
    #: per environment: (name, rollouts, mean reward, pass rate at the threshold)
    environments: list[tuple[str, int, float | None, float | None]]
    pass_threshold: float
    task_flags: dict[str, int]
    rewards: list[float]
    turns: Counter

    @property
    def mean_tokens(self) -> float | None:
        return self.tokens["total"] / self.rollouts if self.rollouts else None


def overview(index: RolloutIndex, cols: RolloutColumns) -> Overview:
    with index.lock:
        n = cols.parsed
        totals = index.totals
        per_task = [tuple(counts) for counts in totals.per_task.values()]
        repeat_counts = [len(rows) for rows in index.task_rows.values()]
        figures = dict(
            lines=cols.lines, parsed=n, rollouts=totals.rollouts, scored=totals.scored,
            failed=sum(totals.failures.values()), bad_lines=index.n_bad, tasks=len(index.task_rows),
            mean_reward=totals.reward_sum / totals.scored if totals.scored else None,
            failures=totals.failures.most_common(), tools=index.tool_counts.most_common(),
            tool_calls=totals.tool_calls, tool_errors=totals.tool_errors,
            mean_turns=totals.turns / totals.rollouts if totals.rollouts else None,
            tokens={"input": totals.tokens["input_tokens"], "output": totals.tokens["output_tokens"],
                    "total": totals.tokens["total_tokens"]},
            usage_details=sorted(index.usage_sums.items()),
            timing=[(key, total / count) for key, (total, count) in index.timing_sums.items() if count],
            metrics=[(name, total / count, count) for name, (total, count) in index.metric_sums.items()],
            models=index.models.most_common(), agents=index.agents.most_common(),
            environments=[(name, int(n), total / scored if scored else None, passed / scored if scored else None)
                          for name, (n, scored, total, passed) in sorted(index.environments.items())],
            pass_threshold=index.threshold,
        )
    pass_at = []
    for k in pass_ks(max((scored for scored, _ in per_task), default=0)):
        # each k over the tasks with at least k scored repeats, as `gym collect` reports it
        values = [pass_at_k(scored, passed, k) for scored, passed in per_task if scored >= k]
        pass_at.append((k, sum(values) / len(values)))
    rewards = [r for r in cols.reward[:n] if not math.isnan(r)]
    turns = Counter(t for t in cols.turns[:n] if t >= 0)
    flags: Counter = Counter()
    for row in task_rows(index, cols):
        flags.update(row.flags)
    return Overview(**figures, repeats=(min(repeat_counts), max(repeat_counts)) if repeat_counts else None,
                    pass_at=pass_at, task_flags=dict(flags), rewards=rewards, turns=turns)


def overview_json(view: Overview) -> dict[str, Any]:
    """The overview's figures as JSON (``/api/overview``)."""
    data = attrs.asdict(view, filter=lambda a, _: a.name not in ("rewards", "turns"))
    data["pass_at"] = {f"pass@{k}": v for k, v in view.pass_at}
    data["failures"] = dict(view.failures)
    data["tools"] = dict(view.tools)
    return data
