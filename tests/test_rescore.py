"""``gym verify``: re-scoring stored rollouts with no model call."""

from __future__ import annotations

import asyncio
import json

import pytest

from gymcore.errors import GymError
from gymcore.rescore import RescoreConfig, rescore

from .conftest import read_jsonl, run_gym
from .test_collect_faults import VerifyBreaksOnOslo, collect_args, write_tasks


@pytest.fixture
def collected(tmp_path, gym_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    result = run_gym(*collect_args(tasks, out, "--num-repeats", "2"), env=gym_env)
    assert result.returncode == 0, result.stderr
    return out


def test_verify_rescores_and_counts_changed_rewards(collected, tmp_path, gym_env):
    lines = read_jsonl(collected)
    # an earlier, buggy verifier: some rewards and metrics were wrong
    stale = tmp_path / "stale.jsonl"
    for line in lines[:5]:
        line["reward"], line["city_correct"] = 0.0, 0
    stale.write_text("".join(json.dumps(line) + "\n" for line in lines))
    new = tmp_path / "new.jsonl"
    result = run_gym("verify", str(stale), "--output", str(new), env={"PATH": "/usr/bin:/bin"})  # no key, no server
    assert result.returncode == 0, result.stderr
    rescored = read_jsonl(new)
    assert rescored == read_jsonl(collected)  # exactly the lines the real verifier wrote, in order
    metrics = json.loads((tmp_path / "new.metrics.json").read_text())
    assert metrics["rescored"] == 20 and metrics["changed"] == 5 and metrics["increased"] == 5
    assert metrics["decreased"] == 0 and metrics["mean_reward"] == 1.0 and metrics["mean_reward_before"] == 0.75
    assert "changed: 5" in result.stdout

    # the output is never overwritten by accident, nor the input ever
    again = run_gym("verify", str(stale), "--output", str(new), env={"PATH": "/usr/bin:/bin"})
    assert again.returncode == 1 and "already exists: pass --overwrite" in again.stderr
    same = run_gym("verify", str(stale), "--output", str(stale), "--overwrite")
    assert same.returncode == 1 and "not over the ones being read" in same.stderr


def test_verify_exceptions_go_to_the_failures_sidecar(collected, tmp_path, plugins):
    plugins.register(VerifyBreaksOnOslo(), name="strict")
    new = tmp_path / "new.jsonl"
    summary = asyncio.run(rescore(plugins, RescoreConfig(collected, new, agent="weather,strict")))
    failed = read_jsonl(tmp_path / "new.failures.jsonl")
    assert sorted((f["task_index"], f["rollout_index"]) for f in failed) == [(2, 0), (2, 1)]
    assert all(f["class"] == "plugin:verify" and "grader table has no Oslo" in f["message"] for f in failed)
    assert len(read_jsonl(new)) == 18 and summary["failed"] == 2 and summary["changed"] == 0


def test_verify_rejects_lines_that_are_not_rollouts(tmp_path, plugins):
    bad = tmp_path / "tasks.jsonl"
    write_tasks(bad)
    with pytest.raises(GymError, match=r"tasks.jsonl:1: not a stored rollout \(KeyError"):
        asyncio.run(rescore(plugins, RescoreConfig(bad, tmp_path / "new.jsonl")))
