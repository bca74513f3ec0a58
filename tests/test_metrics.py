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


def test_one_sample_message_per_failure_class_on_one_clean_line():
    """The first message of each class is kept; a server's error text (untrusted) is shown
    on one line, without terminal escapes, and cut short."""
    from gymcore.metrics import SAMPLE_CHARS, format_summary

    stats = RunStats()
    task = Task(responses_create_params={"input": "hi"})
    errors = [{"type": "model", "kind": "http", "status": 502, "message": "bad gateway\n\x1b[2Jfrom proxy"},
              {"type": "model", "kind": "http", "status": 502, "message": "a later 502"},
              {"type": "model", "kind": "connection", "status": None, "message": "x" * 5000}]
    for i, error in enumerate(errors):
        stats.add(Rollout(task=task, task_index=i, rollout_index=0, agent="a", model="m", error=error))
    summary = stats.summary(1.0)
    samples = summary["failure_samples"]
    assert samples["model:502"] == "bad gateway [2Jfrom proxy"
    assert len(samples["model:connection"]) == SAMPLE_CHARS and samples["model:connection"].endswith("…")
    text = format_summary(summary)
    assert "\x1b" not in text
    assert "failure_samples: model:502: bad gateway" in text
    assert any(line.strip().startswith("model:connection: xxx") for line in text.splitlines())
