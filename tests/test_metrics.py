"""pass@k against brute-force enumeration; the running stats against direct computation."""

from __future__ import annotations

import itertools
import random

import pytest

from gymcore.data import Rollout, Task
from gymcore.metrics import RunStats, pass_at_k


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_unbiased_estimator(n):
    rng = random.Random(n)
    for _ in range(20):
        outcomes = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            assert pass_at_k(n, sum(outcomes), k) == pytest.approx(brute_pass_at_k(outcomes, k))


def test_run_stats_summary():
    stats = RunStats(repeats=3)
    rewards = {0: [1.0, 0.0, 1.0], 1: [0.0, 0.0, 0.5], 2: [1.0, 1.0, 1.0]}
    for task_index, values in rewards.items():
        for r, value in enumerate(values):
            stats.add(Rollout(Task({"input": "x"}), task_index, r, "a", "m", reward=value, turns=2,
                              response={"usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}}))
    stats.add(Rollout(Task({"input": "x"}), 3, 0, "a", "m", error={"type": "model", "kind": "timeout"}))
    assert list(stats.open_tasks) == [3]  # finished tasks are folded away
    summary = stats.summary(2.0)
    flat = [v for vs in rewards.values() for v in vs]
    assert summary["mean_reward"] == pytest.approx(sum(flat) / len(flat))
    passed = {t: [v >= 1.0 for v in vs] for t, vs in rewards.items()}
    for k in (1, 2, 3):
        expected = sum(brute_pass_at_k(p, k) for p in passed.values()) / 3
        assert summary[f"pass@{k}"] == pytest.approx(expected)
    assert summary["failures"] == {"model:timeout": 1} and summary["failed"] == 1
    assert summary["rollouts"] == 10 and summary["scored"] == 9 and summary["total_tokens"] == 36
    assert summary["tasks"] == 4
    assert summary["rollouts_per_s"] == 5.0
