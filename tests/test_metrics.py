"""pass@k against brute-force enumeration; the running stats against direct computation."""

from __future__ import annotations

import itertools
import sys
import random

import pytest

from gymcore.data import Rollout, Task
from gymcore.metrics import RunStats, format_summary, pass_at_k


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


def _rollout(task_index: int, rollout_index: int, reward: float | None = None, *, error: dict | None = None,
             tool_calls: int = 0, usage: tuple[int, int, int] = (10, 2, 4)) -> Rollout:
    tokens = {"input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": usage[0] + usage[1],
              "input_tokens_details": {"cached_tokens": usage[2]}}
    return Rollout(Task({"input": "x"}), task_index, rollout_index, "a", "m", reward=reward, error=error,
                   turns=1 + tool_calls, tool_calls=tool_calls, response={"usage": tokens})


TIMEOUT = {"type": "timeout", "kind": None}


def test_pass_at_k_leaves_out_tasks_with_a_failed_repeat():
    """A task with a failed repeat would enter pass@1 on one sample and pass@2 not at all: it
    is left out of every k, and the summary says how many were, and what counts as a pass."""
    stats = RunStats(repeats=2)
    for rollout in [_rollout(0, 0, 1.0), _rollout(0, 1, 0.0), _rollout(1, 0, 0.5), _rollout(1, 1, 0.5),
                    _rollout(2, 0, 1.0), _rollout(2, 1, error=TIMEOUT), _rollout(3, 0, error=TIMEOUT),
                    _rollout(3, 1, error=TIMEOUT), _rollout(4, 0, 1.0)]:  # task 4: cut short
        stats.add(rollout)
    summary = stats.summary(1.0)
    assert summary["pass@1"] == pytest.approx((0.5 + 0) / 2) and summary["pass@2"] == pytest.approx((1 + 0) / 2)
    assert (summary["pass_at_k_tasks"], summary["pass_at_k_left_out"], summary["tasks"]) == (2, 3, 5)
    assert summary["pass_threshold"] == 1.0


def test_pass_at_k_is_none_when_no_task_has_every_repeat_scored():
    stats = RunStats(repeats=2)
    stats.add(_rollout(0, 0, 1.0))
    stats.add(_rollout(0, 1, error=TIMEOUT))
    summary = stats.summary(1.0)
    assert summary["pass@1"] is None and summary["pass@2"] is None and summary["pass_at_k_left_out"] == 1


def test_summary_says_completed_with_failures():
    stats = RunStats(repeats=1)
    stats.add(_rollout(0, 0, 1.0))
    assert stats.summary(1.0, status="completed")["outcome"] == "completed"
    stats.add(_rollout(1, 0, error=TIMEOUT))
    stats.add(_rollout(2, 0, error=TIMEOUT))
    summary = stats.summary(1.0, status="completed")
    assert summary["status"] == "completed" and summary["failed"] == 2  # stable for scripts
    assert summary["outcome"] == "completed with 2 failures"
    text = format_summary(summary)
    assert "status: completed with 2 failures" in text and "outcome" not in text
    assert RunStats().summary(1.0, status="interrupted")["outcome"] == "interrupted"


def test_summary_figures_keep_scored_and_failed_rollouts_apart():
    """One run showed tool_calls: 4 where every scored rollout had 0: the flat figures are the
    scored rollouts'; the failed ones' are beside them; cached input tokens are counted."""
    stats = RunStats(repeats=1)
    stats.add(_rollout(0, 0, 1.0, usage=(100, 10, 60)))
    stats.add(_rollout(1, 0, 0.0, usage=(100, 10, 0)))
    stats.add(_rollout(2, 0, error=TIMEOUT, tool_calls=4, usage=(500, 50, 400)))
    summary = stats.summary(1.0)
    assert (summary["tool_calls"], summary["mean_turns"], summary["input_tokens"]) == (0, 1.0, 200)
    assert (summary["cached_tokens"], summary["total_tokens"]) == (60, 220)
    assert summary["failed_rollouts"] == {"turns": 5, "tool_calls": 4, "tool_errors": 0, "input_tokens": 500,
                                          "output_tokens": 50, "cached_tokens": 400, "total_tokens": 550}
    text = format_summary(summary).splitlines()
    assert "tool_calls: 0  (scored rollouts)" in text[[i for i, line in enumerate(text) if "tool_calls:" in line][0]]
    assert any("failed_rollouts: turns=5, tool_calls=4" in line for line in text)


def test_pass_at_k_when_repeats_are_not_known_up_front():
    """`gym verify` cannot know the file's repeats before reading it (RunStats(sys.maxsize)):
    pass@k is over the tasks with as many scored repeats as the most any task has."""
    stats = RunStats(repeats=sys.maxsize)
    for rollout in [_rollout(0, 0, 1.0), _rollout(0, 1, 0.0), _rollout(1, 0, 1.0), _rollout(1, 1, error=TIMEOUT),
                    _rollout(2, 0, 1.0)]:
        stats.add(rollout)
    summary = stats.summary(1.0)
    assert (summary["pass@1"], summary["pass@2"], summary["pass_at_k_tasks"], summary["pass_at_k_left_out"]) == (
        0.5, 1.0, 1, 2)
    assert "pass@3" not in summary
