"""The overview's figures: the index's running totals, pass@k with gymcore's estimator, and
one pass over two small arrays for the histograms."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs

from ..metrics import pass_at_k
from .failures import FailureState
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
    """The overview's figures. ``rollouts`` and ``failed`` include the failures sidecar's
    outstanding records (a gymcore output holds only scored rollouts); turns, tool calls
    and tokens are the scored rollouts' (``failed_figures``: the file's failed lines')."""

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
    pass_threshold: float
    pass_at_k_tasks: int
    pass_at_k_left_out: int
    failures: list[tuple[str, int]]
    failures_in_file: int
    failures_in_sidecar: int
    failure_history: dict[str, int]
    tools: list[tuple[str, int]]
    tool_calls: int
    tool_errors: int
    mean_turns: float | None
    tokens: dict[str, int]
    failed_figures: dict[str, int]
    usage_details: list[tuple[str, float]]
    timing: list[tuple[str, float]]
    metrics: list[tuple[str, float, int]]
    models: list[tuple[str, int]]
    agents: list[tuple[str, int]]
    #: per environment: (name, rollouts, mean reward, pass rate at the threshold)
    environments: list[tuple[str, int, float | None, float | None]]
    task_flags: dict[str, int]
    rewards: list[float]
    turns: Counter

    @property
    def mean_tokens(self) -> float | None:
        return self.tokens["total"] / self.scored if self.scored else None


def overview(index: RolloutIndex, cols: RolloutColumns, failed: FailureState | None = None,
             repeats: int | None = None) -> Overview:
    """``failed``: the sidecar sorted against the file; ``repeats``: the run's
    ``num_repeats`` (from its ``.metrics.json``), else the most repeats any task has."""
    failed = failed or FailureState()
    with index.lock:
        n = cols.parsed
        totals = index.totals
        per_task = {task: list(counts) for task, counts in totals.per_task.items()}
        figures, failed_figures = dict(totals.figures), dict(totals.failed_figures)
        in_file = sum(totals.failures.values())
        failures = totals.failures + failed.classes
        figures_kw = dict(
            lines=cols.lines, parsed=n, scored=totals.scored, bad_lines=index.n_bad,
            mean_reward=totals.reward_sum / totals.scored if totals.scored else None,
            failures=failures.most_common(), tools=index.tool_counts.most_common(),
            tool_calls=figures["tool_calls"], tool_errors=figures["tool_errors"],
            mean_turns=figures["turns"] / totals.scored if totals.scored else None,
            tokens={"input": figures["input_tokens"], "output": figures["output_tokens"],
                    "cached": figures["cached_tokens"], "total": figures["tokens"]},
            failed_figures={"rollouts": in_file, **{name: failed_figures[name] for name in
                                                    ("turns", "tool_calls", "tool_errors", "tokens")}},
            usage_details=sorted(index.usage_sums.items()),
            timing=[(key, total / count) for key, (total, count) in index.timing_sums.items() if count],
            metrics=[(name, total / count, count) for name, (total, count) in index.metric_sums.items()],
            models=index.models.most_common(), agents=index.agents.most_common(),
            environments=[(name, int(n), total / scored if scored else None, passed / scored if scored else None)
                          for name, (n, scored, total, passed) in sorted(index.environments.items())],
            pass_threshold=index.threshold,
        )
    for task, count in failed.per_task.items():  # tasks whose repeats failed still count
        per_task.setdefault(task, [0, 0, 0])[2] += count
    sidecar = len(failed.outstanding)
    repeat_counts = [scored + fails for scored, _, fails in per_task.values()]
    expected = repeats if repeats and repeats > 0 else max(repeat_counts, default=0)
    complete = [(scored, passed) for scored, passed, fails in per_task.values() if not fails and scored >= expected]
    pass_at = []
    if complete:
        for k in pass_ks(expected):
            pass_at.append((k, sum(pass_at_k(scored, passed, k) for scored, passed in complete) / len(complete)))
    rewards = [r for r in cols.reward[:n] if not math.isnan(r)]
    turns = Counter(t for t in cols.turns[:n] if t >= 0)
    flags: Counter = Counter()
    for row in task_rows(index, cols, failed.per_task):
        flags.update(row.flags)
    return Overview(**figures_kw, rollouts=totals.rollouts + sidecar, failed=in_file + sidecar,
                    failures_in_file=in_file, failures_in_sidecar=sidecar, failure_history=failed.history(),
                    tasks=len(per_task), repeats=(min(repeat_counts), max(repeat_counts)) if repeat_counts else None,
                    pass_at=pass_at, pass_at_k_tasks=len(complete),
                    pass_at_k_left_out=len(per_task) - len(complete), task_flags=dict(flags), rewards=rewards,
                    turns=turns)


def overview_json(view: Overview) -> dict[str, Any]:
    """The overview's figures as JSON (``/api/overview``)."""
    data = attrs.asdict(view, filter=lambda a, _: a.name not in ("rewards", "turns"))
    data["pass_at"] = {f"pass@{k}": v for k, v in view.pass_at}
    data["failures"] = dict(view.failures)
    data["tools"] = dict(view.tools)
    return data
